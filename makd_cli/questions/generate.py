"""``makd gen-questions``: ask an LLM for questions, validate each one, keep what survives.

Every item is generated under a JSON schema (constrained decoding where the backend has it), then
checked by ``validate``; a rejected item is retried with a new seed a bounded number of times. The
report says how many were kept and why the others were dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from makd_cli.errors import MakdError
from makd_cli.formats.questions import Question
from makd_cli.questions import prompts
from makd_cli.questions.validate import (
    normalise, parse_json_object, validate_description, validate_mcq, validate_yesno,
)

MCQ_SCHEMA = lambda m: {  # noqa: E731
    "type": "object",
    "properties": {
        "question": {"type": "string", "minLength": 10, "maxLength": 200},
        "options": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 60}, "minItems": m, "maxItems": m},
    },
    "required": ["question", "options"],
}
YESNO_SCHEMA = {"type": "object", "properties": {"question": {"type": "string", "minLength": 10, "maxLength": 200}}, "required": ["question"]}
SELECT_SCHEMA = lambda q: {  # noqa: E731
    "type": "object",
    "properties": {"selected": {"type": "array", "items": {"type": "integer"}, "minItems": q, "maxItems": q}},
    "required": ["selected"],
}
DESCRIPTION_SCHEMA = {"type": "object", "properties": {"description": {"type": "string", "minLength": 10, "maxLength": 400}}, "required": ["description"]}


@dataclass
class GenerationReport:
    kind: str
    requested: int
    kept: int = 0
    attempts: int = 0
    rejected: Counter = field(default_factory=Counter)
    ranked_by_llm: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "requested": self.requested, "kept": self.kept, "attempts": self.attempts,
                "rejected": dict(self.rejected.most_common()), "ranked_by_llm": self.ranked_by_llm, "notes": self.notes}


def _source(llm, kind: str, seed: int, attempt: int) -> dict:
    return {"model": llm.name, "backend": llm.backend, "prompt_sha256": prompts.prompt_fingerprint(kind), "seed": seed, "attempt": attempt}


def _example_texts(examples) -> set[str]:
    texts = set()
    for _, answer in examples:
        obj = parse_json_object(answer) or {}
        if isinstance(obj.get("question"), str):
            texts.add(normalise(obj["question"]))
    return texts


def _generate_items(llm, n: int, make_messages, schema, validate, seed: int, retries: int, temperature: float,
                    report: GenerationReport, on_step=None, max_tokens: int = 300, examples=()):
    accepted: list[tuple[dict, int, int]] = []
    # Small models copy the prompt's few-shot examples; a copy counts as a duplicate.
    seen: set[str] = _example_texts(examples)
    attempt = 0
    budget = n * (retries + 1)
    while len(accepted) < n and attempt < budget:
        item_seed = seed * 1_000_003 + attempt
        raw = llm.generate_json(make_messages([a[0]["text"] for a in accepted]), schema, seed=item_seed,
                                temperature=temperature, max_tokens=max_tokens)
        attempt += 1
        item, reason = validate(parse_json_object(raw), seen)
        if reason:
            report.rejected[reason] += 1
        else:
            seen.add(normalise(item["text"]))
            accepted.append((item, item_seed, attempt))
        if on_step:
            on_step(len(accepted), attempt)
    report.attempts = attempt
    report.kept = len(accepted)
    return accepted


def generate_mcq(llm, classes, n, m=5, seed=0, retries=4, temperature=0.8, on_step=None):
    report = GenerationReport("mcq", n)
    items = _generate_items(
        llm, n, lambda avoid: prompts.mcq_messages(classes, m, avoid), MCQ_SCHEMA(m),
        lambda obj, seen: validate_mcq(obj, m, classes, seen), seed, retries, temperature, report, on_step,
        examples=prompts.MCQ_EXAMPLES,
    )
    return [Question("mcq", it["text"], it["options"], source=_source(llm, "mcq", s, a)) for it, s, a in items], report


def generate_yesno(llm, classes, n, select=None, n_images=0, seed=0, retries=4, temperature=0.8, on_step=None):
    """MaKD: generate ``n`` yes/no questions, then let the LLM select and rank the best ``select``.

    Saved in ranked order, so the top-10/20/30/50 subsets of the paper's ablation are prefixes.
    """
    report = GenerationReport("yesno", n)
    items = _generate_items(
        llm, n, lambda avoid: prompts.yesno_messages(classes, n_images, avoid), YESNO_SCHEMA,
        lambda obj, seen: validate_yesno(obj, classes, seen), seed, retries, temperature, report, on_step,
        examples=prompts.YESNO_EXAMPLES,
    )
    questions = [Question("yesno", it["text"], source=_source(llm, "yesno", s, a)) for it, s, a in items]
    if select and questions:
        order = rank_questions(llm, [q.text for q in questions], min(select, len(questions)), seed, report)
        questions = [questions[i] for i in order]
    return questions, report


def rank_questions(llm, texts: list[str], q: int, seed: int, report: GenerationReport) -> list[int]:
    raw = llm.generate_json(prompts.select_messages(texts, q), SELECT_SCHEMA(q), seed=seed, temperature=0.0, max_tokens=20 * q + 40)
    obj = parse_json_object(raw) or {}
    picked: list[int] = []
    for x in obj.get("selected", []) if isinstance(obj.get("selected"), list) else []:
        if isinstance(x, int) and 1 <= x <= len(texts) and x - 1 not in picked:
            picked.append(x - 1)
    report.ranked_by_llm = len(picked) == q
    if len(picked) < q:
        report.notes.append(f"the LLM's selection named {len(picked)} valid distinct questions of {q}; the rest follow in generation order")
        picked += [i for i in range(len(texts)) if i not in picked][: q - len(picked)]
    return picked[:q]


def generate_descriptions(llm, classes, limit_tokens=70, seed=0, retries=4, temperature=0.7, on_step=None):
    """LEAD: one description per class (``<object>``-free; ``class_name`` says whose it is)."""
    report = GenerationReport("description", len(classes))
    out: list[Question] = []
    attempts = 0
    for ci, name in enumerate(classes):
        for r in range(retries + 1):
            s = seed * 1_000_003 + ci * 101 + r
            raw = llm.generate_json(prompts.description_messages(name, classes, limit_tokens - 20), DESCRIPTION_SCHEMA,
                                    seed=s, temperature=temperature, max_tokens=120)
            attempts += 1
            item, reason = validate_description(parse_json_object(raw), name, limit_tokens)
            if reason:
                report.rejected[reason] += 1
                continue
            out.append(Question("description", item["text"], class_name=name, source=_source(llm, "description", s, r + 1)))
            break
        if on_step:
            on_step(len(out), attempts)
    report.attempts, report.kept = attempts, len(out)
    missing = [c for c in classes if c not in {q.class_name for q in out}]
    if missing:
        raise MakdError(f"no valid description for {len(missing)} class(es) (first: {missing[0]}) after {retries + 1} tries each; "
                        "raise --retries or use a larger model")
    return out, report

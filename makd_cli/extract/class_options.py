"""Per-class soft answers from a language-only LLM (LaViD, lavid.txt section 3.2).

For class c and question q the teacher sees the question (class name filled in) and its labelled
options, and we read the next-token logits after the assistant prompt at the option labels only:
T[c, q] = softmax(z_labels / temperature). Yes/no questions give p(yes) = softmax(z_yes, z_no)[yes].

Three prompt layouts:
- ``paper``: the class name sits inside the question, as in the papers; units are classes.
- ``class-last``: the question about "the object", its options and the instruction come first and
  "The object is: <class>." last, so each question's long prefix is evaluated once and every class
  only adds its name and the assistant prompt; units are questions.
- ``lavid-reference``: the LaViD reference code's message and bare label tokens, byte for byte
  (``interop/lavid.py``, docs/reproducing.md); units are classes.

Speed without approximation: a unit's prompts are scored in sorted token order, so consecutive
prompts share their longest possible prefix and the backend's KV cache (cropped to the common prefix)
evaluates each distinct prefix once: the unit costs the number of nodes of its prompts' prefix tree.
Every prompt still sees exactly its own tokens at its own positions, in the same KV cells as a fresh
evaluation, so the logits equal the naive loop's (``naive=True``: a full evaluation per prompt).
Each unit starts from an empty cache, so results never depend on where an interrupted run resumed.
Backends without token access (``openai``) score a unit's chat messages themselves
(``option_logprobs``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.numerics import softmax
from makd_cli.extract.resume import ResumeStore
from makd_cli.formats.questions import PLACEHOLDER, Question
from makd_cli.formats.targets import Targets, write_targets

LABEL_SETS = {"digits": [str(i) for i in range(1, 10)], "letters": list("ABCDEFGHIJ")}
LAYOUTS = ("paper", "class-last", "lavid-reference")
PROMPT_VERSION = 2  # bump when the prompt texts change: a resumed run must not mix old and new answers
YES_NO = (["Yes", "yes", "YES"], ["No", "no", "NO"])


_ARTICLE = re.compile(r"\b(the|a|an|this|that|each|every)\s+" + re.escape(PLACEHOLDER), re.I)


def generic_question(q: Question) -> str:
    """The question about "the object" (class-last): "the <object>" becomes "the object", not "the the object"."""
    return _ARTICLE.sub(lambda m: f"{m.group(1)} object", q.text).replace(PLACEHOLDER, "the object")


def mcq_user_text(q: Question, class_name: str, labels: list[str], layout: str) -> str:
    if layout == "lavid-reference":  # LaViD's own string, byte for byte (interop/lavid.py)
        from makd_cli.interop.lavid import reference_prompt

        return reference_prompt(q, class_name, letters=not labels[0].isdigit())
    options = "\n".join(f"{lab}. {opt}" for lab, opt in zip(labels, q.options))
    instr = f"Answer with the {'number' if labels[0].isdigit() else 'letter'} of the correct option only."
    if layout == "paper":
        return f"{q.instantiate(class_name)}\n{options}\n{instr}"
    return f"{generic_question(q)}\n{options}\n{instr}\nThe object is: {class_name}."


def yesno_user_text(q: Question, class_name: str, layout: str) -> str:
    if layout == "paper":
        return f"{q.instantiate(class_name)}\nAnswer yes or no."
    return f"{generic_question(q)}\nAnswer yes or no.\nThe object is: {class_name}."


def yes_no_token_ids(llm) -> list[list[int]]:
    """Single-token spellings of Yes and No (with and without a leading space)."""
    out = []
    for words in YES_NO:
        ids = []
        for w in words:
            for text in (w, " " + w):
                toks = llm.tokenize_plain(text)
                if len(toks) == 1 and toks[0] not in ids:
                    ids.append(toks[0])
        if not ids:
            raise MakdError(f"{llm.name} has no single token for {words[0]!r}; it cannot answer yes/no questions here")
        out.append(ids)
    return out


def _logsumexp_rows(logits: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    vals = np.empty(len(groups))
    for i, ids in enumerate(groups):
        z = logits[ids]
        mx = z.max()
        vals[i] = mx + np.log(np.exp(z - mx).sum())
    return vals


@dataclass
class ExtractPlan:
    kind: str  # class_mcq | class_yesno
    labels: list[str]
    token_groups: list[list[int]]


def plan_for(llm, questions: list[Question], label_set: str, layout: str = "paper") -> ExtractPlan:
    kind = questions[0].kind
    if layout == "lavid-reference" and kind != "mcq":
        raise MakdError("--prompt-layout lavid-reference asks LaViD's multiple-choice questions; give mcq questions")
    if kind == "mcq":
        m = len(questions[0].options)
        labels = LABEL_SETS[label_set][:m]
        if len(labels) < m:
            raise MakdError(f"--labels {label_set} has only {len(labels)} labels for {m} options")
        groups = llm.label_token_ids(labels)
        # The reference reads the bare label tokens only ("1", not also " 1"), from the tokenizer's vocabulary.
        return ExtractPlan("class_mcq", labels, [g[:1] for g in groups] if layout == "lavid-reference" else groups)
    if kind == "yesno":
        missing = [q.id for q in questions if PLACEHOLDER not in q.text]
        if missing:
            raise MakdError(f"{len(missing)} yes/no questions (first: {missing[0]}) lack the {PLACEHOLDER} placeholder, so a "
                            "language-only teacher cannot ask them per class; answer them per image with --mllm")
        return ExtractPlan("class_yesno", ["yes", "no"], yes_no_token_ids(llm))
    raise MakdError("per-class extraction answers mcq or yesno questions; descriptions are scored by CLIP (--clip)")


def build_messages(plan: ExtractPlan, q: Question, class_name: str, layout: str) -> list[dict]:
    text = mcq_user_text(q, class_name, plan.labels, layout) if plan.kind == "class_mcq" else yesno_user_text(q, class_name, layout)
    return [{"role": "user", "content": text}]


def build_prompt(llm, plan: ExtractPlan, q: Question, class_name: str, layout: str) -> list[int]:
    return llm.tokenize(llm.chat_prompt(build_messages(plan, q, class_name, layout)))


def score_unit(llm, plan: ExtractPlan, messages: list[list[dict]], naive: bool = False) -> tuple[np.ndarray, int]:
    """Label scores (n x M: log-sum-exp of each label's token logits) of a unit's prompts, and the
    prompts' total token count. The cached path runs the prompts in sorted token order (see the
    module docstring); the naive path evaluates each prompt from scratch, in the given order."""
    if hasattr(llm, "option_logprobs"):  # the endpoint formats, tokenizes and scores
        return np.asarray(llm.option_logprobs(messages, plan.token_groups), dtype=np.float64), 0
    prompts = [llm.tokenize(llm.chat_prompt(m)) for m in messages]
    vals = np.empty((len(prompts), len(plan.token_groups)))
    if naive:
        for i, p in enumerate(prompts):
            vals[i] = _logsumexp_rows(llm.naive_next_token_logits(p), plan.token_groups)
    elif hasattr(llm, "score_prompts"):  # the backend packs many prompts per forward (teachers/prefix_pack.py)
        columns = sorted({t for g in plan.token_groups for t in g})
        z = llm.score_prompts(prompts, columns)  # starts from an empty cache, like the loop below
        at = {t: k for k, t in enumerate(columns)}
        groups = [[at[t] for t in g] for g in plan.token_groups]
        for i in range(len(prompts)):
            vals[i] = _logsumexp_rows(z[i], groups)
    else:
        llm.reset_cache()  # each unit starts cold, so results never depend on where a run resumed
        for i in sorted(range(len(prompts)), key=lambda k: prompts[k]):
            vals[i] = _logsumexp_rows(llm.next_token_logits(prompts[i]), plan.token_groups)
    return vals, sum(len(p) for p in prompts)


def extract_class_answers(
    llm, questions: list[Question], classes: list[str], out: str, *, questions_sha256: str, layout: str = "paper",
    label_set: str = "digits", temperature: float = 1.0, restart: bool = False, on_unit=None, naive: bool = False,
    prompt_names: list[str] | None = None,
) -> tuple[Targets, dict]:
    """``prompt_names``: the name each class is asked by when it is not its own (``--class-names lavid``);
    the targets' rows keep ``classes``."""
    if layout not in LAYOUTS:
        raise MakdError(f"--prompt-layout {layout!r} is unknown; choose {' or '.join(LAYOUTS)}")
    if temperature <= 0:
        raise MakdError("--temperature must be positive")
    plan = plan_for(llm, questions, label_set, layout)
    C, Q, M = len(classes), len(questions), len(plan.labels)
    store = ResumeStore(out, {
        "model": str(llm.name), "backend": llm.backend, "kind": plan.kind, "layout": layout, "labels": plan.labels,
        "classes": classes, "questions_sha256": questions_sha256, "question_ids": [q.id for q in questions], "naive": naive,
        "prompt_version": PROMPT_VERSION, **({"prompt_names": prompt_names} if prompt_names else {}),
    }, restart=restart)
    asked = prompt_names or classes
    raw = np.zeros((C, Q, M))
    by_class = layout != "class-last"
    units = [(f"class{c:05d}", [(c, q) for q in range(Q)]) for c in range(C)] if by_class else \
            [(f"question{q:05d}", [(c, q) for c in range(C)]) for q in range(Q)]
    t0, n_prompts, tokens0, resumed, prompt_tokens = time.time(), 0, llm.evaluated_tokens, 0, 0
    # A backend that runs many prompts at once (an HTTP server with requests in flight) gets several
    # units per call, so no unit's tail leaves it idle; each unit is still saved on its own, in order.
    per_call = getattr(llm, "prompts_per_call", 0)
    pending: list[tuple[str, list]] = []

    def flush():
        nonlocal n_prompts, prompt_tokens
        msgs = [build_messages(plan, questions[q], asked[c], layout) for _, cells in pending for c, q in cells]
        vals, n_tok = score_unit(llm, plan, msgs, naive)
        n_prompts, prompt_tokens, start = n_prompts + len(msgs), prompt_tokens + n_tok, 0
        for key, cells in pending:
            part, start = vals[start: start + len(cells)], start + len(cells)
            store.save(key, logits=part)
            raw[tuple(zip(*cells))] = part
            if on_unit:
                on_unit(key)
        pending.clear()

    for key, cells in units:
        if store.done(key):
            raw[tuple(zip(*cells))] = store.load_checked(key, logits=(len(cells), M))["logits"]
            resumed += 1
            if on_unit:
                on_unit(key)
            continue
        pending.append((key, cells))
        if sum(len(c) for _, c in pending) >= per_call:
            flush()
    if pending:
        flush()
    seconds = time.time() - t0
    probs = softmax(raw, temperature)
    meta = {**({"prompt_class_names": list(prompt_names)} if prompt_names else {}), "layout": layout, "temperature": temperature, "label_token_ids": plan.token_groups, "backend": llm.backend,
            "model_file": str(llm.name), "naive": naive, "prompt_version": PROMPT_VERSION,
            # how the label probabilities were read: exact-logits | logit-bias | top-logprobs (openai_http.py)
            "label_probs": getattr(llm, "label_probs_method", "exact-logits")}
    if hasattr(llm, "label_reads"):  # prompts of this run whose top list missed a label (the floor was used)
        meta["label_probs_floored"] = int(llm.label_reads["floored"])
    if plan.kind == "class_yesno":
        targets = Targets("class_yesno", classes, [q.id for q in questions], probs[..., 0], raw[..., 0] - raw[..., 1],
                          teacher=f"{llm.backend}:{llm.name}", questions_sha256=questions_sha256, meta=meta)
    else:
        targets = Targets("class_mcq", classes, [q.id for q in questions], probs, raw, teacher=f"{llm.backend}:{llm.name}",
                          questions_sha256=questions_sha256, option_labels=plan.labels, meta=meta)
    write_targets(out, targets)
    store.clear()
    evaluated = llm.evaluated_tokens - tokens0
    summary = {"classes": C, "questions": Q, "options": M, "kind": plan.kind, "layout": layout, "prompts": C * Q,
               "prompts_computed": n_prompts, "units_resumed": resumed, "seconds": round(seconds, 3),
               "prompts_per_s": round(n_prompts / seconds, 2) if seconds > 0 and n_prompts else None,
               "evaluated_tokens": evaluated, "prompt_tokens": prompt_tokens,
               "tokens_per_s": round(evaluated / seconds, 1) if seconds > 0 and evaluated else None}
    return targets, summary

"""Prompts per second of per-class LLM extraction (LaViD): makd's cached, sorted scoring against the
naive loop, on the offline SmolLM2-135M GGUF with llama.cpp.

    python bench/extract_llm.py                      # 10 classes x 50 questions x 5 options, 2 threads
    python bench/extract_llm.py --classes 4 --questions 10 --naive-prompts 40   # a quick look

Rows:
  (a) naive       a Llama with logits_all=True; per prompt a reset and a full evaluation (the
                  reference code's loop; ``naive=True``), paper layout
  (b) makd paper  the papers' layout (class name inside the question), units = classes
  (c) makd class-last  question and options first, class last, units = questions
plus the model's raw prompt-processing rate (one 512-token prompt) and the tokens/s that makd
actually evaluated. It also reports how far (a) and (b) differ (they should agree to float
rounding) and how far the two layouts' probabilities agree (they are different prompts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from makd_cli.extract.class_options import extract_class_answers  # noqa: E402
from makd_cli.formats.questions import Question  # noqa: E402
from makd_cli.teachers.llamacpp import LlamaCppLM  # noqa: E402

CLASSES = ["Northern Cardinal", "Blue Jay", "American Goldfinch", "European Goldfinch", "Common Raven",
           "Bald Eagle", "Mallard", "Ruby-throated Hummingbird", "Barn Owl", "Atlantic Puffin"]

QUESTIONS = [
    ("What is the main color of the head of the <object>?", ["red", "blue", "yellow", "black", "white"]),
    ("What is the shape of the beak of the <object>?", ["short and conical", "long and thin", "hooked", "flat and broad", "large and colorful"]),
    ("How large is the <object> compared to a sparrow?", ["smaller", "about the same", "a bit larger", "much larger", "several times larger"]),
    ("Where does the <object> usually build its nest?", ["in shrubs", "in tall trees", "on cliffs", "on the ground near water", "in cavities or barns"]),
    ("What does the <object> mostly eat?", ["seeds", "insects", "fish", "small mammals", "nectar"]),
    ("Does the head of the <object> have a crest?", ["a tall pointed crest", "a small crest", "no crest", "a tuft of feathers", "a crest only in males"]),
    ("What color are the wings of the <object>?", ["red", "blue with black bars", "black with white bars", "brown", "gray"]),
    ("What is the typical habitat of the <object>?", ["woodland edges", "open fields", "coasts and sea cliffs", "lakes and ponds", "gardens with flowers"]),
    ("How does the <object> usually fly?", ["in short bursts", "soaring on wide wings", "hovering in place", "fast and direct", "silently at night"]),
    ("What color is the belly of the <object>?", ["red", "white", "yellow", "black", "buff or brown"]),
    ("What color are the legs of the <object>?", ["pink", "black", "orange", "yellow", "gray"]),
    ("When is the <object> most active?", ["at dawn", "during the day", "at dusk", "at night", "all day at sea"]),
    ("What pattern do the feathers of the <object> show?", ["solid color", "bars on the wings", "spots", "streaks", "a glossy sheen"]),
    ("What sound is the <object> known for?", ["a clear whistle", "a loud jay call", "a deep croak", "a screech", "a quack"]),
    ("How long is the tail of the <object>?", ["very short", "short", "medium", "long", "forked"]),
    ("What color is the beak of the <object>?", ["red or orange", "black", "yellow", "pink", "multicolored"]),
    ("Where is the <object> most often seen?", ["at bird feeders", "high in the sky", "on the water", "on rocky islands", "near flowers"]),
    ("What is the face of the <object> like?", ["a black mask", "a white heart shape", "plain", "a red face patch", "a striped face"]),
    ("How does the <object> find its food?", ["picking seeds", "catching insects in flight", "diving into water", "hunting by sound", "sipping from flowers"]),
    ("What color are the eyes of the <object>?", ["dark brown", "black", "yellow", "red", "orange"]),
    ("How social is the <object>?", ["lives in pairs", "forms small flocks", "nests in large colonies", "mostly solitary", "gathers at roosts"]),
    ("What is the wingspan of the <object>?", ["under 15 cm", "15 to 30 cm", "30 to 60 cm", "60 to 120 cm", "over 2 meters"]),
    ("What color is the back of the <object>?", ["red", "blue", "olive or yellow", "black", "brown or gray"]),
    ("How does the <object> behave in winter?", ["stays and visits feeders", "migrates south", "moves to open sea", "stays in its territory", "gathers on open water"]),
    ("What is special about the tongue or bill of the <object>?", ["very long tongue", "thick seed-cracking bill", "colorful bill", "hooked tearing bill", "flat filtering bill"]),
    ("What color is the throat of the <object>?", ["red", "white", "yellow", "black", "iridescent"]),
    ("How many eggs does the <object> usually lay?", ["one", "two", "three to four", "five to seven", "more than eight"]),
    ("What shape are the wings of the <object>?", ["short and rounded", "long and broad", "narrow and pointed", "very small and fast", "soft-edged"]),
    ("How does the male <object> differ from the female?", ["much brighter", "slightly brighter", "same plumage", "larger", "different head color"]),
    ("What kind of feet does the <object> have?", ["perching feet", "strong talons", "webbed feet", "tiny weak feet", "feathered feet"]),
    ("Which body part of the <object> is the most colorful?", ["the whole body", "the head", "the bill", "the throat", "none, it is dull"]),
    ("How does the <object> move on the ground?", ["hops", "walks", "waddles", "rarely lands", "stands upright"]),
    ("What is the shape of the head of the <object>?", ["round", "crested", "flat", "large and round", "small and sleek"]),
    ("Where does the <object> spend most of its time?", ["in trees and shrubs", "in open country", "on water", "in the air", "at sea"]),
    ("What is the main color of the tail of the <object>?", ["red", "blue", "black", "white", "brown"]),
    ("How does the <object> defend itself?", ["flies away quickly", "mobs predators", "dives underwater", "uses its talons", "hides in dense cover"]),
    ("What is the call of the <object> used for?", ["attracting mates", "warning others", "keeping contact in flocks", "marking territory", "it rarely calls"]),
    ("What color is the rump of the <object>?", ["red", "blue", "white", "black", "yellow"]),
    ("What is the body shape of the <object>?", ["stocky", "slender", "large and heavy", "tiny", "round and compact"]),
    ("How well does the <object> see at night?", ["poorly", "moderately", "very well", "it sleeps at night", "unknown"]),
    ("What markings are on the wings of the <object>?", ["none", "white wing bars", "yellow wing patch", "iridescent patch", "dark tips"]),
    ("How does the <object> drink?", ["sips from puddles", "scoops water", "gets water from food", "drinks while flying", "sips nectar"]),
    ("What is the color of the neck of the <object>?", ["red", "blue", "green", "white", "black"]),
    ("How does the <object> raise its young?", ["both parents feed them", "only the female feeds them", "in a burrow", "in a large stick nest", "in a tiny cup nest"]),
    ("What does the nest of the <object> look like?", ["a cup of twigs", "a huge stick platform", "a burrow", "a hollow on a ledge", "a tiny cup of plant down"]),
    ("What is the posture of the <object> when perched?", ["upright", "horizontal", "hunched", "it rarely perches", "tail cocked up"]),
    ("Which season shows the brightest plumage of the <object>?", ["spring", "summer", "autumn", "winter", "it looks the same all year"]),
    ("How does the <object> look in flight from below?", ["pale", "dark", "white head and tail", "colorful", "with a white belly"]),
    ("How far does the <object> travel in a year?", ["stays local", "short distances", "hundreds of kilometers", "thousands of kilometers", "across oceans"]),
    ("What surrounds the eyes of the <object>?", ["a dark mask", "a pale ring", "bare skin", "colorful skin", "nothing special"]),
]


def make_questions(q: int) -> list[Question]:
    if q > len(QUESTIONS):
        raise SystemExit(f"--questions: at most {len(QUESTIONS)}")
    return [Question("mcq", text, opts) for text, opts in QUESTIONS[:q]]


def raw_rate(lm: LlamaCppLM, n_tokens: int = 512, repeats: int = 3) -> float:
    """Prompt processing of one long prompt (real text), best of ``repeats``."""
    text = " ".join(t.replace("<object>", c) for (t, _), c in zip(QUESTIONS * 3, CLASSES * 20))
    toks = lm.tokenize(text)[:n_tokens]
    assert len(toks) == n_tokens
    best = 0.0
    for _ in range(repeats):
        lm.llm.reset()
        t = time.perf_counter()
        lm.llm.eval(toks)
        best = max(best, n_tokens / (time.perf_counter() - t))
    return best


def run(lm: LlamaCppLM, questions, classes, layout: str, naive: bool, tmp: str):
    out = os.path.join(tmp, f"{layout}-{'naive' if naive else 'makd'}.h5")
    targets, summary = extract_class_answers(lm, questions, classes, out, questions_sha256="bench", layout=layout,
                                             restart=True, naive=naive)
    return targets, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llm", default="smollm2-135m")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--naive-prompts", type=int, default=None,
                    help="time the naive loop on the first N classes' prompts only (prompts/s is a rate); default: all")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    classes, questions = CLASSES[: args.classes], make_questions(args.questions)
    load = os.getloadavg()
    res: dict = {"command": " ".join(["python"] + sys.argv), "llm": args.llm, "classes": len(classes), "questions": len(questions), "options": 5,
                 "threads": args.threads, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                 "loadavg_before": [round(x, 2) for x in load]}
    raws = []  # the raw rate is measured before and after every phase (other jobs may share the CPU)
    with tempfile.TemporaryDirectory() as tmp:
        lm = LlamaCppLM(args.llm, threads=args.threads)
        naive_lm = LlamaCppLM(args.llm, threads=args.threads, logits_all=True)
        n_naive_classes = len(classes) if args.naive_prompts is None else max(1, args.naive_prompts // len(questions))
        rows = {}
        for name, model, layout, naive, cls in (("naive", naive_lm, "paper", True, classes[:n_naive_classes]),
                                                ("paper", lm, "paper", False, classes),
                                                ("class-last", lm, "class-last", False, classes)):
            before = raw_rate(lm)
            rows[name] = run(model, questions, cls, layout, naive, tmp)
            after = raw_rate(lm)
            raws += [before, after]
            rows[name][1]["raw_around"] = round((before + after) / 2, 1)
    res["raw_tokens_per_s"] = round(max(raws), 1)
    res["raw_tokens_per_s_all"] = [round(x, 1) for x in raws]
    tn, sn = rows["naive"]
    tp, sp = rows["paper"]
    tc, sc = rows["class-last"]
    keys = ("prompts_computed", "seconds", "prompts_per_s", "evaluated_tokens", "prompt_tokens", "tokens_per_s", "raw_around")
    for name, s in (("naive", sn), ("makd_paper", sp), ("makd_class_last", sc)):
        res[name] = {k: s[k] for k in keys}
        res[name]["speedup_vs_naive"] = round(s["prompts_per_s"] / sn["prompts_per_s"], 2)
        res[name]["tokens_per_s_vs_raw"] = round(s["tokens_per_s"] / res["raw_tokens_per_s"], 2)
        res[name]["tokens_per_s_vs_raw_around"] = round(s["tokens_per_s"] / s["raw_around"], 2)
    k = n_naive_classes
    res["naive_vs_makd_paper"] = {"max_abs_logit_diff": float(np.abs(tn.logits - tp.logits[:k]).max()),
                                  "max_abs_prob_diff": float(np.abs(tn.probs - tp.probs[:k]).max())}
    diff = np.abs(tp.probs - tc.probs)
    res["layout_agreement"] = {"mean_abs_prob_diff": round(float(diff.mean()), 4), "max_abs_prob_diff": round(float(diff.max()), 4),
                               "argmax_agreement": round(float((tp.probs.argmax(-1) == tc.probs.argmax(-1)).mean()), 4),
                               "argmax_histogram_paper": np.bincount(tp.probs.argmax(-1).ravel(), minlength=5).tolist(),
                               "argmax_histogram_class_last": np.bincount(tc.probs.argmax(-1).ravel(), minlength=5).tolist(),
                               "mean_probs_paper": np.round(tp.probs.mean((0, 1)), 3).tolist(),
                               "mean_probs_class_last": np.round(tc.probs.mean((0, 1)), 3).tolist(),
                               # how much the answers vary between classes (0: every class answers alike)
                               "mean_between_class_std_paper": round(float(tp.probs.std(0).mean()), 4),
                               "mean_between_class_std_class_last": round(float(tc.probs.std(0).mean()), 4)}
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    print(f"{args.llm}: {len(classes)} classes x {len(questions)} questions x 5 options, {args.threads} threads "
          f"(load average before {res['loadavg_before'][0]}, after {res['loadavg_after'][0]})")
    print(f"raw prompt processing (one 512-token prompt): best {res['raw_tokens_per_s']} tokens/s "
          f"(measured before/after each row: {res['raw_tokens_per_s_all']})")
    print(f"{'':20s} {'prompts/s':>10s} {'speed-up':>9s} {'evaluated tok':>14s} {'tok/s':>8s} {'/ best raw':>10s} {'/ raw around':>12s}")
    for label, key in (("(a) naive", "naive"), ("(b) makd paper", "makd_paper"), ("(c) makd class-last", "makd_class_last")):
        r = res[key]
        print(f"{label:20s} {r['prompts_per_s']:10.2f} {r['speedup_vs_naive']:8.2f}x {r['evaluated_tokens']:14d} "
              f"{r['tokens_per_s']:8.1f} {r['tokens_per_s_vs_raw']:10.2f} {r['tokens_per_s_vs_raw_around']:12.2f}")
    d = res["naive_vs_makd_paper"]
    print(f"naive vs makd (paper layout): max |logit diff| {d['max_abs_logit_diff']:.2e}, max |prob diff| {d['max_abs_prob_diff']:.2e}")
    a = res["layout_agreement"]
    print(f"paper vs class-last probabilities: mean |diff| {a['mean_abs_prob_diff']}, max |diff| {a['max_abs_prob_diff']}, "
          f"argmax agreement {a['argmax_agreement']:.1%}")
    print(f"  argmax histogram over options 1-5: paper {a['argmax_histogram_paper']}, class-last {a['argmax_histogram_class_last']}; "
          f"mean between-class std of p: paper {a['mean_between_class_std_paper']}, class-last {a['mean_between_class_std_class_last']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

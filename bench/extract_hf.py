"""Prompts per second of per-class LLM extraction (LaViD) on transformers (``--backend hf``): makd's
packed scoring against the LaViD reference code's batch-25 loop and against one prompt at a time,
side by side in one run, on the same prompts.

    python bench/extract_hf.py                                    # SmolLM2-135M (the embedded GGUF), CPU, 10 x 50
    python bench/extract_hf.py --classes 2 --questions 10         # a quick look
    python bench/extract_hf.py --device cuda --model Qwen/Qwen2.5-1.5B-Instruct   # on a GPU (bf16)
    python bench/extract_hf.py --device cuda --model Qwen/Qwen2.5-7B-Instruct --random-weights  # config only

Rows (paper layout: the class inside the question, units = classes):
  (a) one at a time   a full forward per prompt, no cache (``naive=True``)
  (b) reference b=25  the LaViD reference loop: prompts in class-major order, 25 per forward, left
                      padding, the last position's logits (lavid/extract/llm_logits.py)
  (c) makd b=1        makd's one-sequence prefix cache, one prompt per forward (``--batch-size 1``)
  (d) makd packed     makd's default: sorted prompts, shared prefix cached once, the rest of each
                      chunk packed as a prefix tree into one forward (``--batch-size 0``)
  (e) makd class-last (d) with ``--prompt-layout class-last`` (other prompts: reported, not compared)
Agreement: max |difference| of the label probabilities of (b), (c), (d) against (a).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_llm import CLASSES, make_questions  # noqa: E402  (the same LaViD-style questions)

from makd_cli.extract.class_options import build_messages, extract_class_answers, plan_for  # noqa: E402
from makd_cli.teachers.hf_causal import HFCausalLM  # noqa: E402


def load(model: str, device: str, dtype_name: str, random_weights: bool):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "bf16": torch.bfloat16,
             "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    if model == "smollm2-135m":
        from makd_cli.teachers.models import resolve_gguf

        path = resolve_gguf(model)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    elif random_weights:
        tok = AutoTokenizer.from_pretrained(model)
        torch.manual_seed(0)
        with torch.device(device):  # initialised where it runs: a 7B model's random init on the CPU takes minutes
            lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model), dtype=dtype)
    else:
        tok = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    return lm.to(device).eval(), tok, dtype


def reference_loop(hf: HFCausalLM, plan, questions, classes, batch: int = 25) -> tuple[np.ndarray, float, int]:
    """The reference code's loop on makd's prompts: class-major, ``batch`` per forward, left padding."""
    import torch

    tok, model = hf.tok, hf.model
    side = tok.padding_side
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cells = [(c, q) for c in range(len(classes)) for q in range(len(questions))]
    out = np.empty((len(classes), len(questions), len(plan.token_groups)))
    t0, padded = time.perf_counter(), 0
    for s in range(0, len(cells), batch):
        part = cells[s: s + batch]
        texts = [hf.chat_prompt(build_messages(plan, questions[q], classes[c], "paper")) for c, q in part]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=hf._adds_bos).to(hf.device)
        padded += int(enc["input_ids"].numel())
        with torch.inference_mode():
            logits = model(**enc).logits[:, -1].float().cpu().numpy()
        for (c, q), z in zip(part, logits):
            out[c, q] = [np.logaddexp.reduce(z[g]) for g in plan.token_groups]
    seconds = time.perf_counter() - t0
    tok.padding_side = side
    return out, seconds, padded


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="smollm2-135m (embedded GGUF) or a transformers folder / hub id")
    ap.add_argument("--random-weights", action="store_true", help="--model's config with random weights (speed only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--naive-classes", type=int, default=2, help="classes timed for (a) one at a time and (c) (rates)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--budgets", nargs="*", default=[], metavar="ROW,FORWARD",
                    help="also time (d) with these (tree nodes per row, tokens per forward) instead of the default")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    classes, questions = CLASSES[: args.classes], make_questions(args.questions)
    res: dict = {"command": " ".join(["python"] + sys.argv), "model": args.model, "device": args.device,
                 "classes": len(classes), "questions": len(questions), "options": 5, "torch_threads": torch.get_num_threads(),
                 "cpu": platform.processor() or platform.machine(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    model, tok, dtype = load(args.model, args.device, args.dtype, args.random_weights)
    res["dtype"] = str(dtype).replace("torch.", "")
    if args.device.startswith("cuda"):
        res["gpu"] = torch.cuda.get_device_name(args.device)
        torch.cuda.reset_peak_memory_stats(args.device)

    def hf(batch_size: int) -> HFCausalLM:
        return HFCausalLM(args.model, device=args.device, dtype=dtype, model=model, tokenizer=tok, batch_size=batch_size)

    packed = hf(0)
    plan = plan_for(packed, questions, "digits")
    k = min(args.naive_classes, len(classes))
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        def run(name, lm, cls, layout="paper", naive=False):
            t, s = extract_class_answers(lm, questions, cls, os.path.join(tmp, name + ".h5"), questions_sha256="bench",
                                         layout=layout, restart=True, naive=naive)
            rows[name] = {"prompts": s["prompts"], "seconds": s["seconds"], "prompts_per_s": s["prompts_per_s"],
                          "evaluated_tokens": s["evaluated_tokens"], "prompt_tokens": s["prompt_tokens"]}
            return t

        run("warm-up", packed, classes[:1])  # first-call costs (kernels, allocator) out of the timed rows
        rows.clear()
        t_naive = run("one_at_a_time", hf(1), classes[:k], naive=True)
        ref_raw, ref_s, ref_tokens = reference_loop(packed, plan, questions, classes)
        n = len(classes) * len(questions)
        rows["reference_b25"] = {"prompts": n, "seconds": round(ref_s, 3), "prompts_per_s": round(n / ref_s, 2),
                                 "evaluated_tokens": ref_tokens, "prompt_tokens": None}
        t_seq = run("makd_b1", hf(1), classes[:k])
        t_packed = run("makd_packed", packed, classes)
        run("makd_class_last", packed, classes, layout="class-last")
        for b in args.budgets:
            other = hf(0)
            other._budgets = lambda b=tuple(int(x) for x in b.split(",")): b
            run(f"makd_packed_{b.replace(',', '_')}", other, classes)
    if args.device.startswith("cuda"):
        res["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(args.device) / 2**30, 2)
    res["row_nodes_forward_tokens"] = list(packed._budgets())
    ref_probs = softmax(ref_raw)
    base = rows["reference_b25"]["prompts_per_s"]
    for r in rows.values():
        r["vs_reference"] = round(r["prompts_per_s"] / base, 2)
    res["rows"] = rows
    res["max_abs_prob_diff_vs_one_at_a_time"] = {
        "reference_b25": float(np.abs(ref_probs[:k] - t_naive.probs).max()),
        "makd_b1": float(np.abs(t_seq.probs - t_naive.probs).max()),
        "makd_packed": float(np.abs(t_packed.probs[:k] - t_naive.probs).max())}
    res["makd_packed_vs_reference"] = {"max_abs_prob_diff": float(np.abs(t_packed.probs - ref_probs).max()),
                                       "argmax_agreement": float((t_packed.probs.argmax(-1) == ref_probs.argmax(-1)).mean())}
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    print(f"{args.model} ({res['dtype']}, {args.device}): {len(classes)} classes x {len(questions)} questions x 5 options; "
          f"load average {res['loadavg_before'][0]} -> {res['loadavg_after'][0]}")
    print(f"{'':24s} {'prompts':>8s} {'prompts/s':>10s} {'vs ref b=25':>11s} {'evaluated tok':>14s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['prompts']:8d} {r['prompts_per_s']:10.2f} {r['vs_reference']:10.2f}x {r['evaluated_tokens']:14d}")
    d = res["max_abs_prob_diff_vs_one_at_a_time"]
    print(f"max |prob diff| vs one at a time (first {k} classes): reference {d['reference_b25']:.1e}, "
          f"makd b=1 {d['makd_b1']:.1e}, makd packed {d['makd_packed']:.1e}")
    a = res["makd_packed_vs_reference"]
    print(f"makd packed vs reference b=25 (all prompts): max |prob diff| {a['max_abs_prob_diff']:.1e}, "
          f"argmax agreement {a['argmax_agreement']:.1%}")
    if "peak_memory_gib" in res:
        print(f"peak GPU memory {res['peak_memory_gib']} GiB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

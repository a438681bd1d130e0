"""The ``makd`` command line: parses arguments and calls the library; nothing else lives here.

Errors the user can fix arrive as ``MakdError`` and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from makd_cli import __version__
from makd_cli.cli_interop import export_app, import_app
from makd_cli.cli_output import bold, emit as _emit, err, out, styled
from makd_cli.cli_plugins import plugin_group
from makd_cli.errors import MakdError
from makd_cli.extract.config import ExtractConfig
from makd_cli.train.config import TrainConfig

app = typer.Typer(
    name="makd",
    help="Teach small image classifiers what large language models know.\n\n"
    "Pipeline: gen-questions -> extract -> train -> eval -> inspect. Each step reads and writes plain files "
    "(questions.jsonl, targets.h5, checkpoints); see `makd COMMAND --help`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Look at datasets: class lists and split sizes.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")


class Kind(str, Enum):
    mcq = "mcq"
    yesno = "yesno"
    description = "description"


def _default(config, name: str):
    """A flag's default is its config field's: one home for every default (the job's dataclass)."""
    f = config.__dataclass_fields__[name]
    return f.default


def _given(ctx: typer.Context, **values) -> dict:
    """The values the user gave on the command line, by config field (``param=field`` renames: see callers);
    flags left out are not passed, so the config's own defaults (and a task's) apply."""
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) is None or ctx.get_parameter_source(k).name != "DEFAULT"}


def _version(value: bool):
    if value:
        print(f"makd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")):
    from makd_cli.fileio import reset_stdio

    reset_stdio()  # `-` (standard input/output) is claimed afresh by each command, in main() and CliRunner alike


# ---------------------------------------------------------------------------------------------
@app.command("gen-questions")
def gen_questions(
    classes: Path = typer.Option(..., "--classes", help="Class list: one class name per line (`makd data classes` writes one)."),
    output: Path = typer.Option(..., "-o", "--output", help="Questions file to write (JSONL)."),
    kind: Kind = typer.Option(Kind.mcq, help="mcq: LaViD multiple choice; yesno: MaKD aspects; description: LEAD, one per class."),
    n: int = typer.Option(20, "-n", help="How many questions to generate (mcq, yesno)."),
    options: int = typer.Option(5, "--options", "-m", help="Answer options per mcq question."),
    select: Optional[int] = typer.Option(None, "--select", help="yesno: after generating N, let the LLM select and rank this many (MaKD 3.1)."),
    llm: str = typer.Option("smollm2-135m", "--llm", help="Model: alias (smollm2-135m), .gguf path, HF owner/repo/file.gguf, HF id (--backend hf) or API model name."),
    backend: str = typer.Option("llama.cpp", help="llama.cpp | hf | openai"),
    api_base: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint for --backend openai (key from $OPENAI_API_KEY)."),
    seed: int = typer.Option(0, help="Seed: the same seed and model give the same questions."),
    retries: int = typer.Option(4, help="Extra attempts per item when a generated item fails validation."),
    temperature: float = typer.Option(0.8, min=0, help="Sampling temperature of the generator (0 or more)."),
    max_tokens: int = typer.Option(70, "--max-tokens", min=1, help="description: CLIP token limit per description."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for llama.cpp (default: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report instead of text."),
    prompt_class_names: str = typer.Option("folder", "--class-names", help="mcq, yesno: the class names the writer's prompt lists: "
                                           "folder (the --classes file as is) or lavid (LaViD's list for those classes)."),
):
    """Have an LLM write questions about the classes; every item is validated before it is kept.

    Small local models write weak questions: paper-quality question sets need a 7B+ model or an API
    (the papers used GPT-4o). The report says how many items survived validation and why others did not.
    """
    from makd_cli.cli_plugins import plugin_options
    from makd_cli.questions.run import GenQuestionsConfig, run_gen_questions

    report = run_gen_questions(GenQuestionsConfig(
        classes=classes, output=output, kind=kind.value, n=n, options=options, select=select, llm=llm, backend=backend,
        api_base=api_base, seed=seed, retries=retries, temperature=temperature, max_tokens=max_tokens, threads=threads,
        progress=not as_json, backend_options=plugin_options(), prompt_class_names=prompt_class_names))

    def render():
        r = report
        out.print(styled("kept ", bold(r['kept']), f" of {r['requested']} {r['kind']} questions ({r['attempts']} attempts) -> {output}"))
        for reason, count in r["rejected"].items():
            out.print(f"  dropped {count:3d}: {reason}")
        for note in r["notes"]:
            out.print(f"  note: {note}")
        if r["kept"] < r["requested"]:
            out.print("  small local models write few usable questions; use a 7B+ model or an API for paper-quality sets")

    _emit(report, as_json, render)


# ---------------------------------------------------------------------------------------------
@app.command()
def extract(
    ctx: typer.Context,
    output: Path = typer.Option(..., "-o", "--output", help="Targets file to write (HDF5)."),
    questions: Optional[Path] = typer.Option(None, "--questions", help="Questions file from `makd gen-questions`."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class list (per-class teachers); or give --data."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset (name, name:path or ImageFolder path): its classes, or its images for --mllm/--clip."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Language-only teacher: per-class soft answers (LaViD; yes/no for MaKD questions)."),
    mllm: Optional[str] = typer.Option(None, "--mllm", help="Multimodal teacher: per-image p(yes) (MaKD), e.g. internvl2-8b, or a GGUF model (with --mmproj) for llama.cpp on the CPU."),
    mmproj: Optional[Path] = typer.Option(None, "--mmproj", help="--mllm MODEL.gguf: its llama.cpp vision projector (mmproj .gguf); runs without a GPU."),
    clip: Optional[str] = typer.Option(None, "--clip", help="CLIP teacher scoring class descriptions per image (LEAD)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Control teachers: random (Gaussian targets), word-embedding (class-name embeddings)."),
    backend: str = typer.Option(_default(ExtractConfig, "backend"), help="Backend of --llm: {choices}; --mllm MODEL --backend openai: a server at --api-base (docs/servers.md)."),
    api_base: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint for --backend openai (key from $OPENAI_API_KEY)."),
    prompt_layout: str = typer.Option(_default(ExtractConfig, "prompt_layout"), help="paper: class name inside the question; class-last: question first, class last (faster, see docs); "
                                                          "lavid-reference: LaViD's reference prompt and bare label tokens; "
                                                          "makd-reference (--mllm): MaKD's reference prompt, no \" Answer yes or no.\" (docs/reproducing.md)."),
    labels: str = typer.Option(_default(ExtractConfig, "labels"), help="Option labels: digits (1..M, the reference code's default) or letters (A..)."),
    temperature: float = typer.Option(_default(ExtractConfig, "temperature"), help="Softmax temperature over the option logits."),
    kind: str = typer.Option(_default(ExtractConfig, "kind"), "--kind", help="--mllm: yesno (per-image aspect targets) or zero_shot (class scores: the papers' MLLM row, a KD teacher)."),
    split: str = typer.Option(_default(ExtractConfig, "split"), help="--mllm: which split's images to answer for (train for training targets; test for eval)."),
    object_word: str = typer.Option(_default(ExtractConfig, "object_word"), help="--mllm: word that replaces <object> (the teacher must judge the image, not a class name)."),
    trust_remote_code: bool = typer.Option(_default(ExtractConfig, "trust_remote_code"), "--trust-remote-code", help="--mllm: run the model repo's own code (InternVL2/2.5 original checkpoints need it; that path is GPU-only and untested in CI)."),
    batch_questions: int = typer.Option(_default(ExtractConfig, "batch_questions"), help="--mllm: questions answered per forward pass from one cached image prefix."),
    workers: int = typer.Option(_default(ExtractConfig, "workers"), min=0, help="--mllm: DataLoader workers decoding images while the model runs."),
    device: Optional[str] = typer.Option(None, help="--mllm: cuda, cuda:1 or cpu (default: the GPU when there is one)."),
    restart: bool = typer.Option(_default(ExtractConfig, "restart"), help="Discard an unfinished run's saved progress instead of resuming it."),
    seed: int = typer.Option(_default(ExtractConfig, "seed"), help="Seed for control teachers."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads for llama.cpp (default: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (classes, questions, seconds, prompts/s)."),
    prompt_class_names: str = typer.Option("folder", "--class-names", help="--llm: the names the prompts ask by: folder (makd's reader "
                                           "names), lavid (LaViD's class lists, so the prompts are the reference's byte for byte; the "
                                           "targets' rows keep makd's names) or makd (refused: MaKD publishes no list)."),
):
    """Have a teacher answer the questions; write targets.h5 (resumes after an interruption)."""
    from makd_cli.cli_plugins import plugin_options
    from makd_cli.device import check_device_name
    from makd_cli.extract.run import run_extract

    if device is not None:
        check_device_name(device)
    given = _given(ctx, questions=questions, classes=classes, data=data, llm=llm, mllm=mllm, clip=clip, teacher=teacher,
                   backend=backend, api_base=api_base, prompt_layout=prompt_layout, labels=labels, temperature=temperature,
                   kind=kind, split=split, object_word=object_word, trust_remote_code=trust_remote_code,
                   batch_questions=batch_questions, workers=workers, device=device, mmproj=mmproj, restart=restart, seed=seed,
                   threads=threads, prompt_class_names=prompt_class_names)
    summary = run_extract(ExtractConfig(output=output, **given, options=plugin_options(), progress=not as_json))

    def render():
        s = summary
        if "images" in s:
            out.print(f"{s['kind']} targets for {s['images']} images x {s['questions'] or s['classes']} -> {output} "
                      f"({s['seconds']} s, {s['images_per_s']} images/s; {s['failed_images']} unreadable images skipped)")
            if "zero_shot_accuracy" in s:
                out.print(f"  zero-shot accuracy {s['zero_shot_accuracy']:.2f}%")
            return
        speed = f", {s['prompts_per_s']} prompts/s" if s.get("prompts_per_s") else ""
        out.print(f"{s['kind']} targets for {s['classes']} classes x {s['questions']} questions -> {output} ({s['seconds']} s{speed})")
        if s.get("units_resumed"):
            out.print(f"  resumed {s['units_resumed']} finished units from an interrupted run")

    _emit(summary, as_json, render)


# ---------------------------------------------------------------------------------------------
@app.command()
def train(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", help="Dataset: fashion-mnist, NAME:PATH (cub, cars, ...) or an ImageFolder path."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder: best.pt, last.pt, metrics.jsonl."),
    method: str = typer.Option(_default(TrainConfig, "method"), help="Method: {choices}; or a combination like lavid+kd."),
    task: Optional[str] = typer.Option(None, "--task", help="Training objective: classify, moco, detection (Faster R-CNN + FPN on "
                                       "--data coco:PATH, --method ce or makd; defaults: COCO's 1x schedule, 12 epochs, lr 0.02, "
                                       "weight decay 1e-4). Default: the task that owns --method."),
    targets: Optional[Path] = typer.Option(None, "--targets", help="Targets file from `makd extract` (lavid, makd)."),
    student: str = typer.Option(_default(TrainConfig, "student"), help="resnet18/34/50, mobilenetv1, mobilenet_v2, shufflenet_v2, efficientnet_b0, vit_b_16, small_cnn, or a timm name."),
    epochs: int = typer.Option(_default(TrainConfig, "epochs"), help="Epochs (the papers: 240); the lr milestones 150/180/210 scale with it."),
    batch_size: int = typer.Option(_default(TrainConfig, "batch_size"), "--batch-size", "-b", min=1, help="Batch size (the papers: 16)."),
    lr: float = typer.Option(_default(TrainConfig, "lr"), min=0, help="SGD learning rate (the papers: 0.01)."),
    momentum: float = typer.Option(_default(TrainConfig, "momentum"), min=0, max=1, help="SGD momentum."),
    weight_decay: float = typer.Option(_default(TrainConfig, "weight_decay"), "--weight-decay", min=0, help="SGD weight decay."),
    milestones: Optional[str] = typer.Option(None, help="Comma-separated epochs where lr drops 10x (default: scaled 150,180,210)."),
    aux_weight: Optional[float] = typer.Option(None, "--aux-weight", "--alpha", "--lambda", min=0, help="Weight of the method's loss (default: makd 4, lavid 40)."),
    control: Optional[str] = typer.Option(None, help="Replace the targets by a control of the same shape: {choices}."),
    teacher_ckpt: Optional[Path] = typer.Option(None, "--teacher-ckpt", help="Teacher checkpoint for kd/dkd/mlkd."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Keep N training images per class (small-data regime)."),
    train_fraction: float = typer.Option(_default(TrainConfig, "train_fraction"), "--train-fraction", help="Keep this fraction of the training images (makd.txt Table 5)."),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help="Share of training images held out for validation (never the "
                                                "test split). Default: 0.1 with --select-by val; 0 with --select-by test-loss/test-acc, "
                                                "as the papers train on every image; --method lead-ssl and --task detection hold nothing "
                                                "out (nothing is chosen on it)."),
    select_by: str = typer.Option(_default(TrainConfig, "select_by"), "--select-by", help="Which epoch best.pt holds: val (best validation top-1, the default), or the papers' "
                                  "protocols, which read the test split: test-loss (LaViD: lowest test CE) or test-acc (MaKD: best test top-1), "
                                  "which also hold nothing out unless --val-fraction is given, as the papers train on every training image."),
    select_every: Optional[int] = typer.Option(None, "--select-every", min=1, help="Epochs between checks for best.pt (default: 5 for test-loss as "
                                               "LaViD's reference, else 1; the last epoch is always checked)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", min=16, help="Input side length (default: native size up to 64 px, else 224)."),
    pretrained: Optional[str] = typer.Option(None, help="Backbone weights: `cache` (ImageNet weights already in the local timm/torch cache), "
                                             "`torchvision` (torchvision's IMAGENET1K_V1 file in the torch hub cache, as LaViD and LEAD++ load) "
                                             "or a local .pth/.safetensors file."),
    seed: int = typer.Option(_default(TrainConfig, "seed")),
    runs: int = typer.Option(1, help="Train this many seeds (seed, seed+1, ...) into OUTPUT/seedN."),
    workers: Optional[int] = typer.Option(None, min=0, help="DataLoader workers (default: 0 on small CPUs)."),
    device: str = typer.Option(_default(TrainConfig, "device"), help="auto, cpu, cuda, cuda:1 ..."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the student."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from OUTPUT/last.pt."),
    quiet: bool = typer.Option(False, help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run already in OUTPUT (its best.pt, last.pt, metrics.jsonl, "
                                   "seedN/ runs); without it a folder that holds a run is refused."),
    restart: bool = typer.Option(False, "--restart", help="Start the run in OUTPUT over, discarding its saved progress (as --overwrite); "
                                 "what a resume refused for changed inputs suggests."),
    hold_out_classes: Optional[str] = typer.Option(None, "--hold-out-classes", metavar="N[:SEED]|FILE",
                                                   help="Leave classes out of training and validation (the test split keeps them) for "
                                                        "`makd eval --unseen`: N classes chosen with SEED (default 0, the same for every "
                                                        "--seed), or a file of class names, one a line. Recorded in the checkpoint."),
    log: List[str] = typer.Option([], "--log", "--tracker", help="Experiment tracker, repeatable: tensorboard (event files in the run folder), "
                                  "wandb, trackio (pip install 'makd[wandb]' / 'makd[trackio]'; their offline modes and variables apply), "
                                  "csv (metrics.csv). Every epoch's losses, lr, val/test figures and images/s; the config as "
                                  "hyperparameters. metrics.jsonl is written either way. Under torchrun write --tracker (torchrun takes --log as its own --log-dir)."),
    init: str = typer.Option(_default(TrainConfig, "init"), "--init", help="Initialisation: timm (timm's zero-init of each residual block's last BN scale; the "
                             "extra outputs' head rows at zero) or reference (BN scales at 1 and PyTorch's default Linear init for every "
                             "head row, as LaViD's and MaKD's code). Recorded in the checkpoint's config."),
    test_resize: Optional[int] = typer.Option(None, "--test-resize", min=16, help="Test images: resize the shorter side to this, then "
                                              "centre-crop --image-size (default: size x 256/224, i.e. 256 for 224 px, as LaViD; MaKD: 224)."),
):
    """Train a student: CE on the classes plus the method's loss on its extra outputs.

    Options of one method or task (--aspect-loss, --kd-temperature, --moco-queue, ...) are declared by
    that plug-in and listed under "Options of the plug-ins"."""
    from makd_cli.cli_plugins import plugin_options
    from makd_cli.device import check_device_name
    from makd_cli.train.loggers import check_logger_names
    from makd_cli.train.runs import train_runs

    check_device_name(device)
    # Only the flags given reach the config: its defaults, and --task NAME's own schedule (detection:
    # COCO's 1x), apply to the rest. Plug-in options stay the plug-ins' (TrainConfig.options).
    given = _given(ctx, method=method, student=student, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                   weight_decay=weight_decay, aux_weight=aux_weight, control=control, per_class=per_class,
                   train_fraction=train_fraction, val_fraction=val_fraction, select_by=select_by, select_every=select_every,
                   image_size=image_size, pretrained=pretrained, seed=seed, workers=workers, device=device, compile=compile,
                   resume=resume, quiet=quiet, overwrite=overwrite, restart=restart,
                   hold_out_classes=hold_out_classes, init=init, test_resize=test_resize)
    paths = {"targets": targets, "teacher_ckpt": teacher_ckpt}
    given.update({k: str(v) for k, v in paths.items() if v is not None})
    if milestones is not None:
        given["milestones"] = _milestones(milestones)
    if as_json:
        given["quiet"] = True
    if log:
        given["log"] = check_logger_names(log)
    cfg = TrainConfig.for_task(task, data=data, out=str(output), **given, options=plugin_options())
    results = train_runs(cfg, runs)

    def render():
        for r in results:
            if r.get("task") == "detection":  # no validation split: the final training loss; AP from `makd eval`
                out.print(f"{r['out']}: {r['epochs']} epochs, final training loss {r['history'][-1]['train_loss']:.4f} "
                          f"({r['split']['train']} train images); COCO AP: makd eval {r['out']}")
                continue
            sel = r.get("selection") or {}
            if sel.get("split") == "test":  # the papers' protocols: say that the test split chose it
                what = "test CE" if sel["metric"] == "test_loss" else "test top-1"
                out.print(f"{r['out']}: best.pt is epoch {sel['epoch']} of {r['epochs']}, {what} {sel['value']:.4g} "
                          f"(--select-by {sel['by']}: chosen on the test split, the papers' protocol)")
                continue
            if sel.get("split") == "train":  # --val-fraction 0 under --select-by val: no validation top-1 to show
                out.print(f"{r['out']}: best.pt is epoch {sel['epoch']} of {r['epochs']}, lowest training loss {sel['value']:.4g} "
                          f"(no validation split: --val-fraction 0; {r['split']['train']} train images)")
                continue
            if sel.get("at_chance"):  # not a result: say so (train/divergence.py chance_note)
                err.print(f"makd: warning: {r['out']}: {sel['warning']}", markup=False, highlight=False, soft_wrap=True)
                out.print(f"{r['out']}: validation top-1 {r['best_val_top1']:.2f}% is chance level after {r['epochs']} epochs "
                          f"({r['split']['train']} train / {r['split']['val']} val images)", markup=False, highlight=False, soft_wrap=True)
                continue
            out.print(f"{r['out']}: best validation top-1 {r['best_val_top1']:.2f}% after {r['epochs']} epochs "
                      f"({r['split']['train']} train / {r['split']['val']} val images)")

    _emit({"runs": results}, as_json, render)


def _milestones(text: Optional[str]) -> Optional[List[int]]:
    if not text:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise MakdError(f"--milestones {text!r}: give comma-separated epochs, e.g. 150,180,210") from None
    if not values or min(values) < 1:
        raise MakdError(f"--milestones {text!r}: epochs start at 1")
    return values


# ---------------------------------------------------------------------------------------------
class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"


@app.command("eval")
def eval_(
    checkpoints: List[Path] = typer.Argument(..., help="Checkpoints (best.pt) or run folders; several give one comparison table."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset (default: the one the checkpoint was trained on)."),
    targets: Optional[Path] = typer.Option(None, "--targets", help="Targets to measure the student's aspect outputs against (default: the training targets)."),
    split: str = typer.Option("test", help="test (default) or train."),
    fmt: Format = typer.Option(Format.table, "--format", help="table (terminal), markdown or csv."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print per-class accuracy."),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print every metric as JSON."),
    probe: Optional[str] = typer.Option(None, "--probe", metavar="[sgd|quick]",  # a bare --probe is sgd (cli_plugins.OPTIONAL_VALUES)
                                        help="Self-supervised protocol (LEAD): linear probe top-1/top-5 and retrieval Rank-1/Rank-5/mAP "
                                             "on frozen features. --probe (= sgd, LEAD's public code): SGD linear layer, lr 30, batch 256, "
                                             "100 epochs on augmented training images (slow: 100 passes of the backbone); --probe quick: "
                                             "logistic regression on un-augmented features."),
    probe_epochs: int = typer.Option(100, "--probe-epochs", min=1, help="--probe sgd: epochs (the public code's 100; its lr drops x 0.1 at epochs 60 and 80 stay where they are)."),
    retrieval: str = typer.Option("test", "--retrieval", help="--probe: test (the public code: leave-one-out within the test split) "
                                                              "or train-test (test queries, training gallery)."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Markdown reproduction table: one row per run setting, one top-1 column "
                                      "per checkpoint protocol (val, and the papers' test-split choices), and --paper numbers."),
    paper: List[str] = typer.Option([], "--paper", help="RUN=NUMBER, the paper's figure for a run (a method, or METHOD.CONTROL); "
                                    "repeatable; implies --side-by-side."),
    unseen: bool = typer.Option(False, "--unseen", help="Runs trained with --hold-out-classes: recognise the held-out classes by "
                                "their teacher signatures through the extra outputs (lavid, makd): unseen top-1 and generalized "
                                "zero-shot seen / unseen / harmonic mean, beside chance (docs/unseen.md)."),
    test_resize: Optional[int] = typer.Option(None, "--test-resize", min=16, help="Test images: resize the shorter side to this before the "
                                              "centre crop (default: the checkpoint's --test-resize; MaKD's code: 224)."),
):
    """Accuracy (top-1, top-5, per class), group metrics and the method's own metrics on the test split."""
    from makd_cli.evaluate.run import EvalConfig, run_eval
    from makd_cli.evaluate.show import show_eval

    from makd_cli.evaluate.protocols import parse_paper

    paper_numbers = parse_paper(paper)  # before evaluating: a malformed --paper is one line at once
    found = run_eval(EvalConfig(checkpoints=list(checkpoints), data=data, targets=str(targets) if targets else None,
                                split=split, device=device, probe=probe, probe_epochs=probe_epochs, retrieval=retrieval,
                                progress=not as_json, unseen=unseen, test_resize=test_resize))
    show_eval(found, split=split, fmt=fmt.value, per_class=per_class, probe=probe, as_json=as_json, console=out,
              side_by_side=side_by_side, paper=paper_numbers)


# ---------------------------------------------------------------------------------------------
@app.command()
def inspect(
    source: Path = typer.Argument(..., help="A targets.h5 (heatmap, question, class, quality) or a checkpoint / run folder "
                                            "(curves, tsne, image, gradcam)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Picture to write: .png, .svg or .pdf (by extension)."),
    view: str = typer.Option("auto", help="heatmap: classes x questions | question: one question's options per class (--question) | "
                                         "class: one class's most and least likely aspects (--class) | quality: target quality report | "
                                         "curves: losses and val top-1 per epoch | tsne: student vs teacher aspect outputs | "
                                         "image: student vs teacher per aspect for one image (--image) | gradcam: where the student looks (--image) | "
                                         "unseen: which held-out class is mistaken for which, beside their signatures' distance (--hold-out-classes runs). "
                                         "auto: heatmap for targets, curves for runs."),
    question: Optional[str] = typer.Option(None, "--question", help="Question id (or 1-based position) for --view question; the colouring aspect of --view tsne."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Class name for --view class; the class to explain in --view gradcam (default: the predicted one)."),
    top: Optional[int] = typer.Option(None, help="heatmap: the N most varying questions and most distinctive classes; question: the N surest classes; "
                                                "class: N most and N least likely aspects (default 10); image: N aspects (default 20)."),
    quality: bool = typer.Option(False, "--quality", help="Target quality report (same as --view quality)."),
    compare: Optional[List[Path]] = typer.Option(None, "--compare", help="Other targets of the same classes and questions: how far "
                                                 "each agrees with SOURCE, per question and overall (--view compare; repeat for more)."),
    questions: Optional[Path] = typer.Option(None, "--questions", help="Questions file, to show question texts and options instead of ids."),
    drop_low_entropy: Optional[Path] = typer.Option(None, "--drop-low-entropy", help="With --quality and --questions: write the questions without the low-entropy ones here."),
    image: Optional[List[str]] = typer.Option(None, "--image", metavar="FILE|INDEX",
                                              help="image / gradcam: an image file or an index into the test split; repeat it for gradcam "
                                                   "(default: the first test image of each class)."),
    data: Optional[str] = typer.Option(None, "--data", help="Checkpoint views: the dataset (default: the one the checkpoint was trained on)."),
    targets: Optional[Path] = typer.Option(None, "--targets", help="tsne / image: the teacher's targets (default: the checkpoint's training targets)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="tsne: embed at most this many test images (default 1000; t-SNE time grows fast); "
                                                              "gradcam without --image: this many test images (default 8)."),
    device: str = typer.Option("auto", help="Checkpoint views: auto, cpu, cuda ..."),
    terminal: bool = typer.Option(True, help="Also draw a compact view in the terminal."),
    as_json: bool = typer.Option(False, "--json", help="Print the view's numbers as JSON."),
):
    """Pictures of targets and runs: heatmaps, one question or class in depth, target quality, training curves,
    t-SNE of aspect outputs, one image's aspects, and Grad-CAM. See docs/inspect.md for a picture of each view."""
    from makd_cli.cli_plugins import plugin_options
    from makd_cli.inspect.run import InspectConfig, run_inspect

    chosen = "compare" if compare else "quality" if quality or drop_low_entropy else view
    result = run_inspect(InspectConfig(
        source=source, output=output, view=chosen, question=question, class_name=class_name, top=top, questions=questions,
        terminal=terminal, as_json=as_json, options={"drop_low_entropy": drop_low_entropy, "images": list(image or []), "data": data,
                                                     "targets": targets, "limit": limit, "device": device, "compare": list(compare or []),
                                                     **plugin_options()}),
        console=out)
    if as_json:
        print(json.dumps(result, indent=1, default=str))
    elif output:
        out.print(f"wrote {output}")


# ---------------------------------------------------------------------------------------------
class ReportFormat(str, Enum):
    html = "html"
    markdown = "markdown"


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., help="Run folders or checkpoints, as for `makd eval` (a folder of seedN/ runs is one row)."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The page to write (report.html, or report.md with --format markdown)."),
    fmt: ReportFormat = typer.Option(ReportFormat.html, "--format", help="html: one self-contained file (pictures inline, nothing fetched); "
                                     "markdown: Markdown with its pictures in OUTPUT_files/ beside it."),
    paper: List[str] = typer.Option([], "--paper", help="RUN=NUMBER, the paper's figure for a run (as `makd eval --paper`); repeatable."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset (default: the one each run was trained on)."),
    device: str = typer.Option("auto", help="Where the evaluation runs: auto, cpu, cuda ..."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress output."),
):
    """One page per comparison: makd eval's table (protocols, † marks, seed spread, best and last epoch, --paper),
    training curves, per-class accuracy, and the targets' heatmap and quality report; each section names the
    command that reproduces it."""
    from makd_cli.evaluate.protocols import parse_paper
    from makd_cli.fileio import check_output_path
    from makd_cli.report.build import ReportConfig, build_report
    from makd_cli.report.render import render_report

    paper_numbers = parse_paper(paper)  # before evaluating: a malformed --paper is one line at once
    check_output_path(output, "report")
    cfg = ReportConfig(runs=list(runs), output=output, fmt=fmt.value, paper=paper_numbers, data=data, device=device, progress=not quiet)
    written = render_report(build_report(cfg), output, fmt.value, runs)
    out.print(f"wrote {written[0]}" + (f" and {len(written) - 1} pictures in {written[1].parent}" if len(written) > 1 else ""))


# ---------------------------------------------------------------------------------------------
@app.command()
def select(
    targets: Path = typer.Argument(..., help="Targets from `makd extract` over an over-generated question set."),
    questions: Path = typer.Option(..., "--questions", help="The questions those targets answer."),
    q: int = typer.Option(..., "-q", help="How many questions to keep."),
    output_questions: Path = typer.Option(..., "--out-questions", help="Selected questions file to write."),
    output_targets: Path = typer.Option(..., "--out-targets", help="Selected targets file to write."),
    strategy: str = typer.Option("maximin", help="maximin: grow the smallest distance between class signatures; pairs: fewest indistinguishable class pairs."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Keep the Q questions whose answers best separate the classes (measured, not hoped for)."""
    from makd_cli.select import SelectConfig, run_select

    report = run_select(SelectConfig(targets=targets, questions=questions, q=q, out_questions=output_questions,
                                     out_targets=output_targets, strategy=strategy))

    def render():
        b, a = report["before"], report["after"]
        out.print(f"kept {q} of {report['available']} questions -> {output_questions}, {output_targets}")
        out.print(f"  min class distance / random: {b['min_distance_ratio']:.3f} -> {a['min_distance_ratio']:.3f}; "
                  f"low-entropy questions: {b['low_entropy_questions']} -> {a['low_entropy_questions']}")

    _emit(report, as_json, render)


# ---------------------------------------------------------------------------------------------
@data_app.command("classes")
def data_classes(data: str = typer.Argument(..., help="Dataset: fashion-mnist, NAME:PATH or an ImageFolder path."),
                 output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the list here instead of stdout.")):
    """Print the dataset's class names, one per line (the class list gen-questions and extract take)."""
    from makd_cli.data import load_dataset
    from makd_cli.formats.questions import write_classes

    from makd_cli.data.layout import dataset_input_paths
    from makd_cli.fileio import check_outputs_distinct

    check_outputs_distinct({"DATA": dataset_input_paths(data)}, {"-o": output})
    write_classes(output or "-", load_dataset(data).classes)  # no -o: standard output, as -o -


@data_app.command("info")
def data_info(data: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """Classes and split sizes of a dataset, and the datasets makd knows."""
    from makd_cli.data import DATASETS, load_dataset

    ds = load_dataset(data)
    info = {"name": ds.name, "reader": ds.reader, "classes": len(ds.classes), "train": len(ds.train), "test": len(ds.test), "native_size": ds.native_size,
            "known_datasets": DATASETS.describe()}
    _emit(info, as_json, lambda: out.print_json(json.dumps(info)))


# ---------------------------------------------------------------------------------------------
@app.command()
def doctor(
    selftest: bool = typer.Option(True, "--selftest/--no-selftest", help="Run the llama.cpp self-test (in a subprocess; a few seconds)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Check the installation: versions, GPUs, llama.cpp's build and self-test, embedded models, data, hub.

    Each line is ok, or says what to do. Exit code 1 when something is broken.
    """
    from makd_cli.doctor import DoctorConfig, run_doctor

    report = run_doctor(DoctorConfig(selftest=selftest))

    def render():
        colour = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "cyan"}
        for c in report.checks:
            fix = f"\n      fix: {c.fix}" if c.fix and c.status != "ok" else ""
            out.print(styled((f"{c.status:>4}", colour[c.status]), f" {c.name}: {c.found}{fix}"), highlight=False, soft_wrap=True)
        out.print("all good" if report.ok else styled(("problems found", "bold red"), ": see the fix lines above"))

    _emit(report.to_json(), as_json, render)
    if not report.ok:
        raise typer.Exit(1)


@app.command("plugins")
def plugins(kind: Optional[str] = typer.Argument(None, help="One kind: dataset, student, method, task, control, backend, "
                                                  "multimodal-backend, teacher-kind, teacher, view, strategy (default: all)."),
            as_json: bool = typer.Option(False, "--json", help="Print names, help and declared options as JSON.")):
    """List the plug-ins makd knows (datasets, students, methods, backends, controls, views, strategies) and their options."""
    from makd_cli.registry import KINDS

    if kind is not None and kind not in KINDS:
        raise MakdError(f"unknown plug-in kind {kind!r}; choose one of: {', '.join(KINDS)}")
    listing = {k: spec.load().describe_full() for k, spec in KINDS.items() if kind in (None, k)}

    def render():
        for k, entries in listing.items():
            out.print(bold(k))
            for name, e in entries.items():
                out.print(f"  {name:<16} {e['help']}", highlight=False)
                for o in e["options"]:
                    limits = f"; {o['limits']}" if o["limits"] else ""
                    out.print(f"  {'':<16}   {o['flag']} ({o['type']}, default {o['default']}{limits}): {o['help']}", highlight=False)

    _emit(listing, as_json, render)


plugin_group(app)  # the commands' flags reserved; a subcommand's plug-ins add their options when it runs (cli_plugins.py)


def main(argv: Optional[List[str]] = None) -> None:
    """The console entry point: every usage error and ``MakdError`` leaves as one line on stderr, exit 2."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    from typer.exceptions import Abort

    from makd_cli.cli_plugins import build_command, one_line

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = build_command(app, args).main(args=args, prog_name="makd", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(2)
    except ClickException as exc:  # unknown option, bad number, missing file: the parser's usage errors
        err.print(styled(("makd: error:", "bold red"), f" {one_line(exc)}"), highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, UsageError) else exc.exit_code)
    except Abort:
        code = 130
    except MakdError as exc:
        err.print(styled(("makd: error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = 130
    if code == 130:
        err.print("makd: interrupted; finished work is saved, run the same command again to resume")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

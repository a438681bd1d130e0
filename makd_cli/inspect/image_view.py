"""One image, student vs teacher per aspect (makd.txt Figure 5), plus the helpers every
checkpoint view shares: finding the checkpoint, its aspect head, its teacher targets and its data.

The teacher's row for an image is the class's row for per-class targets (the image's true class
when known, else the student's prediction) and the image's own row for per-image targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from makd_cli.cli_output import bold, styled
from makd_cli.errors import MakdError
from makd_cli.numerics import softmax
from makd_cli.run_folder import checkpoint_path as first_checkpoint
from makd_cli.formats.targets import Targets, read_targets
from makd_cli.input_hashes import warn_if_targets_changed
from makd_cli.inspect.heatmap import shorten
from makd_cli.inspect.question import question_text, questions_by_id
from makd_cli.inspect.terminal import bar
from makd_cli.inspect.views import ViewRequest, register_view, save_figure


# --------------------------------------------------------------------------- shared helpers
def checkpoint_path(source: Path) -> Path:
    """A checkpoint, or a run folder standing for its best.pt (else last.pt; the first seed's for multi-seed runs)."""
    if source.is_dir():
        return first_checkpoint(source)
    if source.suffix in (".h5", ".hdf5"):
        raise MakdError(f"{source} is a targets file; this view needs a checkpoint or run folder from `makd train`")
    return source


@dataclass
class AspectHead:
    method: str  # the target-based term (its name, for titles)
    output: str  # its declared output activation: sigmoid (logits of p(yes)) or identity (the answers)
    lo: int
    hi: int
    shape: tuple  # one target row: (Q,) or (Q, M)
    kind: str  # the targets kind it was trained on
    question_ids: list

    @property
    def sigmoid(self) -> bool:
        """Whether the outputs are logits of p(yes) (the method declares it: ``MethodTerm.output``)."""
        return self.output == "sigmoid"

    def probs(self, extra: np.ndarray) -> np.ndarray:
        """The student's answers in the targets' shape, (N, Q) or (N, Q, M)."""
        out = extra[:, self.lo:self.hi]
        out = 1 / (1 + np.exp(-out)) if self.sigmoid else out
        return out.reshape((len(out),) + tuple(self.shape))


def aspect_head(ckpt: dict, path: Path, view: str) -> AspectHead:
    head = ckpt.get("head") or {}
    slices = head.get("slices") or {}
    for info in head.get("terms") or []:
        name = info.get("method")
        if "shape" in info and name in slices:
            lo, hi = slices[name]
            from makd_cli.methods.base import term_facts

            return AspectHead(name, term_facts(info).get("output", "identity"), int(lo), int(hi), tuple(info["shape"]), head.get("targets_kind") or "",
                              list(head.get("question_ids") or []))
    raise MakdError(f"{path} has no aspect head (trained with --method {head.get('method', '?')}); --view {view} needs a "
                    "student trained with --method makd or lavid and --targets")


def load_student(source: Path, device: str = "cpu"):
    """(checkpoint path, checkpoint dict, model on device in eval mode)."""
    from makd_cli.formats.checkpoint import load_checkpoint
    from makd_cli.students import student_from_checkpoint

    path = checkpoint_path(source)
    ckpt = load_checkpoint(path)
    model = student_from_checkpoint(ckpt).to(device).eval()
    return path, ckpt, model


def resolve_device(name: str | None) -> str:
    from makd_cli.device import resolve_device as _resolve

    return str(_resolve(name or "auto"))


def teacher_targets(ckpt: dict, head: AspectHead, override: str | Path | None) -> Targets:
    path = override or ckpt["config"].get("targets")
    if not path:
        raise MakdError("the checkpoint names no targets file; pass --targets (the file it was trained on)")
    if override is None and not Path(path).exists():
        raise MakdError(f"the checkpoint's training targets {path} are not there any more; pass --targets PATH")
    t = read_targets(path)
    warn_if_targets_changed(ckpt, path, "the checkpoint")
    if head.question_ids and list(t.question_ids) != list(head.question_ids):
        raise MakdError(f"{path}: its question ids differ from the ones the checkpoint was trained on; pass the training targets")
    if tuple(t.probs.shape[1:]) != tuple(head.shape):
        raise MakdError(f"{path}: one target row has shape {t.probs.shape[1:]}, the student's head {tuple(head.shape)}")
    if list(t.classes) != list(ckpt["classes"]):
        raise MakdError(f"{path}: its classes differ from the checkpoint's; pass the training targets")
    return t


def load_data(ckpt: dict, data: str | None):
    from makd_cli.data import load_dataset

    spec = data or ckpt["config"]["data"]
    ds = load_dataset(spec, seed=ckpt["config"].get("seed", 0))
    if list(ds.classes) != list(ckpt["classes"]):
        raise MakdError(f"--data {spec}: its classes differ from the checkpoint's; give the dataset it was trained on")
    return ds


def image_transform(ckpt: dict):
    from makd_cli.data.transforms import eval_transform

    return eval_transform(int(ckpt.get("image_size", 224)), ckpt.get("native_size"), (ckpt.get("config") or {}).get("test_resize"))


def teacher_rows(t: Targets, ids: list[str], classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Teacher row per image (the class row, or the image's own row) and whether one exists."""
    if not t.per_image:
        ok = classes >= 0
        return t.probs[np.where(ok, classes, 0)], ok
    row = {img: i for i, img in enumerate(t.images)}
    idx = np.array([row.get(i, -1) for i in ids])
    return t.probs[np.maximum(idx, 0)], idx >= 0


@dataclass
class ImageSpec:
    label: str  # how the user named it
    load: object  # () -> PIL image
    class_index: int  # true class, -1 when unknown
    sample_id: str | None  # id in the dataset (for per-image targets)


def _load_test_image(test, i: int):
    try:
        return test.load(i)
    except MakdError:
        raise
    except Exception:  # an unreadable file in the dataset: name it, as training and eval do
        raise MakdError(f"test image {i} ({test.ids[i]}) cannot be read; fix or remove it, or pick another --image") from None


def resolve_images(specs: list[str], ckpt: dict, data: str | None, default: int = 1) -> list[ImageSpec]:
    """``--image``: a file path or an index into the test split; none given: the first test images, one per class."""
    from PIL import Image

    ds = None
    classes = list(ckpt["classes"])

    def dataset():
        nonlocal ds
        if ds is None:
            ds = load_data(ckpt, data)
        return ds

    out: list[ImageSpec] = []
    if not specs:
        test = dataset().test
        picks = [int(np.flatnonzero(test.labels == c)[0]) for c in range(len(classes)) if np.any(test.labels == c)][:default]
        specs = [str(i) for i in picks]
    for s in specs:
        p = Path(s).expanduser()
        if p.is_file():
            def load(p=p):
                try:
                    with Image.open(p) as im:
                        return im.convert("RGB")
                except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                    raise MakdError(f"--image {p} is not an image file PIL can read") from None
            # a file inside a class folder (ImageFolder layout) names its class
            cls = next((classes.index(part) for part in reversed(p.resolve().parts[:-1]) if part in classes), -1)
            out.append(ImageSpec(p.name, load, cls, p.resolve().as_posix()))
        elif s.lstrip("-").isdigit():
            test = dataset().test
            i = int(s)
            if not -len(test) <= i < len(test):
                raise MakdError(f"--image {s}: the test split of {ckpt['config']['data']} has {len(test)} images (0..{len(test) - 1})")
            i %= len(test)
            out.append(ImageSpec(f"test #{i}", lambda i=i, test=test: _load_test_image(test, i), int(test.labels[i]), test.ids[i]))
        else:
            raise MakdError(f"--image {s}: neither an image file nor an index into the test split")
    return out


def per_image_row(t: Targets, spec: ImageSpec) -> int | None:
    if not t.per_image or spec.sample_id is None:
        return None
    ids = {img: i for i, img in enumerate(t.images)}
    if spec.sample_id in ids:
        return ids[spec.sample_id]
    for img, i in ids.items():  # a file path that ends with a dataset sample id
        if spec.sample_id.endswith("/" + img):
            return i
    return None


def run_images(model, ckpt, images: list, device: str):
    """(class logits, extra) for PIL images."""
    import torch

    tf = image_transform(ckpt)
    x = torch.stack([tf(im) for im in images]).to(device)
    with torch.no_grad():
        logits, extra = model(x)
    return logits.float().cpu().numpy(), extra.float().cpu().numpy(), x


def display_image(x) -> np.ndarray:
    """An input tensor (C, H, W), normalised, back to an RGB array in [0, 1]: what the model saw."""
    from makd_cli.data.transforms import MEAN, STD

    arr = x.detach().cpu().numpy().transpose(1, 2, 0) * np.array(STD) + np.array(MEAN)
    return np.clip(arr, 0, 1)


# --------------------------------------------------------------------------- the view
@register_view("image", help="one image: student vs teacher probability per aspect (MaKD Figure 5)")
def image_view(req: ViewRequest) -> dict:
    opts = req.options or {}
    device = resolve_device(opts.get("device"))
    path, ckpt, model = load_student(req.source, device)
    head = aspect_head(ckpt, path, "image")
    t = teacher_targets(ckpt, head, opts.get("targets"))
    specs = resolve_images(list(opts.get("images") or [])[:1], ckpt, opts.get("data"))
    spec = specs[0]
    logits, extra, x = run_images(model, ckpt, [spec.load()], device)
    classes = list(ckpt["classes"])
    p_class = softmax(logits)[0]
    pred = int(p_class.argmax())
    student = head.probs(extra)[0]

    row = per_image_row(t, spec)
    if row is not None:
        teacher, source = t.probs[row], "the image's own targets"
    elif t.per_image:
        c = spec.class_index if spec.class_index >= 0 else pred
        rows = np.flatnonzero(t.labels == c)
        if not len(rows):
            raise MakdError(f"the per-image targets have no row for this image and no image of class {classes[c]}")
        teacher, source = t.probs[rows].mean(axis=0), f"mean of the {classes[c]} images' targets (no row for this image)"
    else:
        c = spec.class_index if spec.class_index >= 0 else pred
        teacher = t.probs[c]
        source = f"class {classes[c]}" + ("" if spec.class_index >= 0 else " (the student's prediction; the image's class is unknown)")

    qs = questions_by_id(req.questions)
    ids = list(t.question_ids)
    name_for_text = classes[spec.class_index] if spec.class_index >= 0 else None
    if t.kind == "class_mcq":
        # per question: the teacher's most likely option, and both probabilities of it
        best = teacher.argmax(axis=1)
        qi = np.arange(len(ids))
        s_val, t_val = student[qi, best], teacher[qi, best]

        def label(j):
            q = qs.get(ids[j])
            opt = q.options[best[j]] if q is not None and q.options else (t.option_labels[best[j]] if t.option_labels else str(best[j] + 1))
            return f"{question_text(q, ids[j], name_for_text)} -> {opt}"
        meaning = "p(teacher's most likely option)"
    elif t.kind in ("class_yesno", "image_yesno"):
        s_val, t_val = student, teacher
        label = lambda j: question_text(qs.get(ids[j]), ids[j], name_for_text)  # noqa: E731
        meaning = "p(yes)"
    else:
        s_val, t_val = student.reshape(-1), teacher.reshape(-1)
        label = lambda j: ids[j] if j < len(ids) else f"dim{j}"  # noqa: E731
        meaning = "value"
    order = np.argsort(-np.maximum(s_val, t_val), kind="stable")
    top = req.top or 20
    shown = order[:top]
    mae = float(np.mean(np.abs(s_val - t_val)))
    rows_out = [{"question_id": ids[j] if j < len(ids) else str(j), "text": label(j), "student": round(float(s_val[j]), 4),
                 "teacher": round(float(t_val[j]), 4)} for j in order]

    if req.output:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(shown)
        fig = plt.figure(figsize=(12, max(3.2, 0.32 * n + 1.4)))
        gs = fig.add_gridspec(1, 2, width_ratios=[1, 3.2], wspace=0.05)
        ax_im = fig.add_subplot(gs[0])
        ax_im.imshow(display_image(x[0]), interpolation="nearest" if x.shape[-1] <= 64 else "antialiased")
        ax_im.set_axis_off()
        truth = classes[spec.class_index] if spec.class_index >= 0 else "unknown"
        ax_im.set_title(f"{shorten(spec.label, 30)}\nclass: {truth}\nstudent: {classes[pred]} ({100 * p_class[pred]:.1f}%)", fontsize=9)
        ax = fig.add_subplot(gs[1])
        y = np.arange(n)
        ax.barh(y - 0.2, t_val[shown] * (100 if meaning.startswith("p(") else 1), height=0.38, color="#e76f51", label="teacher")
        ax.barh(y + 0.2, s_val[shown] * (100 if meaning.startswith("p(") else 1), height=0.38, color="#264653", label="student")
        ax.set_yticks(y, [shorten(label(j), 60) for j in shown], fontsize=8)
        ax.yaxis.tick_right()
        ax.invert_yaxis()
        if meaning.startswith("p("):
            ax.set_xlim(0, 100)
            ax.set_xlabel(f"{meaning} (%)")
        else:
            ax.set_xlabel(meaning)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{head.method} student vs teacher ({shorten(source, 70)}); mean |difference| {mae:.3f}"
                     + (f"; {n} of {len(order)} aspects" if n < len(order) else ""), fontsize=9)
        save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        req.console.print(styled(bold(spec.label), f": class {classes[spec.class_index] if spec.class_index >= 0 else 'unknown'}, "
                                 f"student predicts {classes[pred]} ({100 * p_class[pred]:.1f}%)"), highlight=False)
        req.console.print(f"teacher: {source}; {meaning}, student (S) vs teacher (T); mean |difference| {mae:.3f}", highlight=False)
        hi = 1.0 if meaning.startswith("p(") else float(max(np.max(s_val), np.max(t_val)))
        lo = 0.0 if meaning.startswith("p(") else float(min(np.min(s_val), np.min(t_val)))
        room = max(20, req.console.width - 24)
        for j in shown:
            req.console.print(f"  {shorten(label(j), room)}", highlight=False, markup=False)
            req.console.print(f"    T {t_val[j]:6.3f} {bar(float(t_val[j]), 30, lo, hi)}", style="dark_orange", highlight=False)
            req.console.print(f"    S {s_val[j]:6.3f} {bar(float(s_val[j]), 30, lo, hi)}", style="cyan", highlight=False)
    return {"view": "image", "checkpoint": str(path), "image": spec.label, "class": classes[spec.class_index] if spec.class_index >= 0 else None,
            "predicted": classes[pred], "p_predicted": round(float(p_class[pred]), 4), "teacher": source, "meaning": meaning,
            "mean_abs_difference": round(mae, 4), "aspects": rows_out, "output": str(req.output) if req.output else None}

"""Grad-CAM (Selvaraju et al. 2017; lavid.txt Figure 3): where the student looks for a class.

The map is the ReLU of the last spatial feature map weighted by the spatially averaged gradient of
the class logit, upsampled to the input and overlaid on it. The layer is the last module of the
backbone whose output still has a spatial extent (``layer4`` for ResNets, the last conv block of
the small CNN), found by one forward pass, so any convolutional student works.
"""

from __future__ import annotations

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.inspect.class_view import find_class
from makd_cli.inspect.heatmap import shorten
from makd_cli.inspect.image_view import display_image, image_transform, load_student, resolve_device, resolve_images, softmax
from makd_cli.inspect.terminal import print_block_heatmap
from makd_cli.inspect.views import ViewRequest, register_view, save_figure

DEFAULT_IMAGES = 8


def target_layer(model, x):
    """(name, module): the last backbone module, in execution order, whose output is a spatial map."""
    import torch

    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "layer4"):
        return "backbone.layer4", backbone.layer4
    seen: list[tuple[str, object]] = []

    def hook(name):
        def record(mod, inp, out):
            if torch.is_tensor(out) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
                seen.append((name, mod))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in backbone.named_modules() if n]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise MakdError("Grad-CAM needs a convolutional student whose features keep a spatial map; this student has none "
                        "at its input size (a ViT, or an image shrunk to 1 x 1)")
    name, module = seen[-1]
    return "backbone." + name, module


def grad_cam(model, x, classes=None):
    """Grad-CAM maps in [0, 1], shape (N, H, W) of the input, plus class logits and the explained classes."""
    import torch
    import torch.nn.functional as F

    for m in model.modules():  # in-place activations would overwrite the map the hook keeps
        if getattr(m, "inplace", False):
            m.inplace = False
    name, layer = target_layer(model, x)
    store: dict = {}

    def fwd(mod, inp, out):
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    handle = layer.register_forward_hook(fwd)
    try:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits, _ = model(x)
            target = logits.argmax(1) if classes is None else torch.as_tensor(classes, device=logits.device)
            logits.gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    act, grad = store["act"].detach(), store["grad"].detach()
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    cam = (cam / peak).cpu().numpy()
    return cam, logits.detach().float().cpu().numpy(), target.cpu().numpy(), name, tuple(act.shape[-2:])


def coarse(cam: np.ndarray, h: int, w: int) -> np.ndarray:
    """Block-average a map down to h x w (for JSON and the terminal)."""
    H, W = cam.shape
    ys = np.linspace(0, H, h + 1).astype(int)
    xs = np.linspace(0, W, w + 1).astype(int)
    return np.array([[cam[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:max(xs[j + 1], xs[j] + 1)].mean() for j in range(w)] for i in range(h)])


@register_view("gradcam", help="Grad-CAM of the student's predicted (or --class) class on images (LaViD Figure 3)")
def gradcam_view(req: ViewRequest) -> dict:
    import torch

    opts = req.options or {}
    device = resolve_device(opts.get("device"))
    path, ckpt, model = load_student(req.source, device)
    classes = list(ckpt["classes"])
    specs = resolve_images(list(opts.get("images") or []), ckpt, opts.get("data"), default=int(opts.get("limit") or DEFAULT_IMAGES))
    explain = None if req.class_name is None else find_class(classes, req.class_name, "the checkpoint")
    tf = image_transform(ckpt)
    x = torch.stack([tf(s.load()) for s in specs]).to(device)
    cam, logits, target, layer, grid = grad_cam(model, x, None if explain is None else [explain] * len(specs))
    probs = softmax(logits)
    pred = probs.argmax(1)
    results = []
    for k, s in enumerate(specs):
        results.append({"image": s.label, "class": classes[s.class_index] if s.class_index >= 0 else None,
                        "predicted": classes[pred[k]], "p_predicted": round(float(probs[k, pred[k]]), 4),
                        "explained": classes[target[k]], "p_explained": round(float(probs[k, target[k]]), 4),
                        "cam_7x7": np.round(coarse(cam[k], 7, 7), 3).tolist()})
    if req.output:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(specs)
        cols = min(n, 8)
        blocks = -(-n // cols)
        fig, axes = plt.subplots(2 * blocks, cols, figsize=(1.8 * cols + 0.6, 2.1 * 2 * blocks), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        small = x.shape[-1] <= 64
        for k, r in enumerate(results):
            row, col = 2 * (k // cols), k % cols
            img = display_image(x[k])
            axes[row, col].imshow(img, interpolation="nearest" if small else "antialiased")
            axes[row, col].set_title(f"{shorten(r['image'], 18)}\nclass: {shorten(r['class'] or '?', 16)}\n"
                                     f"pred: {shorten(r['predicted'], 14)} {100 * r['p_predicted']:.0f}%", fontsize=7)
            axes[row + 1, col].imshow(img.mean(-1), cmap="gray", interpolation="nearest" if small else "antialiased")
            im = axes[row + 1, col].imshow(cam[k], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            axes[row + 1, col].set_title(f"Grad-CAM: {shorten(r['explained'], 16)}", fontsize=7)
        fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01, label="Grad-CAM (max = 1)")
        fig.suptitle(f"{path.parent.name}/{path.name}: Grad-CAM at {layer} ({grid[0]}x{grid[1]} map), "
                     + ("predicted class" if explain is None else f"class {classes[explain]}"), fontsize=9)
        save_figure(fig, req.output)
    if req.terminal and not req.as_json:
        req.console.print(f"Grad-CAM at {layer} ({grid[0]}x{grid[1]} map)", highlight=False)
        for r in results:
            req.console.print(f"  {r['image']}: class {r['class'] or '?'}, predicted {r['predicted']} ({100 * r['p_predicted']:.1f}%), "
                              f"explaining {r['explained']}", highlight=False)
        h = 12
        print_block_heatmap(req.console, coarse(cam[0], h, 2 * h), [""] * h, [""] * (2 * h),
                            title=f"Grad-CAM of {results[0]['image']}", lo=0.0, hi=1.0)
    return {"view": "gradcam", "checkpoint": str(path), "layer": layer, "map_size": list(grid), "images": results,
            "output": str(req.output) if req.output else None}

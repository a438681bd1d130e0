"""Build students by name from timm or torchvision, adapted to small images.

The head is one ``nn.Linear(features, C + E)``: outputs 0..C-1 are class logits and C..C+E-1 the
method's extra outputs (MaKD's widened output, or LaViD's auxiliary head: a linear map from the
same features, so both papers' heads are this one layer).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from makd_cli.errors import MakdError
from makd_cli.registry import Registry


@dataclass(frozen=True)
class StudentSpec:
    library: str  # "timm" or "torchvision"
    name: str
    help: str
    alias: str = ""  # the --student name when it differs from the library's


# Named students; any other timm model name works too (``build_backbone``).
STUDENTS: Registry[StudentSpec] = Registry("student", kind="student")
for _spec in (
    StudentSpec("timm", "resnet18", "ResNet-18 (the papers' main student)"),
    StudentSpec("timm", "resnet34", "ResNet-34"),
    StudentSpec("timm", "resnet50", "ResNet-50"),
    StudentSpec("timm", "mobilenetv1_100", "MobileNet-V1 (MaKD)", alias="mobilenetv1"),
    StudentSpec("torchvision", "mobilenet_v2", "MobileNet-V2 (LaViD)"),
    StudentSpec("torchvision", "shufflenet_v2_x1_0", "ShuffleNet-V2 1.0x (LaViD)", alias="shufflenet_v2"),
    StudentSpec("timm", "efficientnet_b0", "EfficientNet-B0 (MaKD)"),
    StudentSpec("torchvision", "vit_b_16", "ViT-B/16 (224 px)"),
    StudentSpec("makd", "small_cnn", "a 4-layer CNN for quick CPU runs"),
):
    STUDENTS.add(_spec.alias or _spec.name, _spec, _spec.help)
register_student = STUDENTS.add

SMALL_IMAGE = 64  # at or below this side length, ResNets get a 3x3 stride-1 stem


class SmallCNN(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = c_in

    def forward(self, x):
        return self.body(x)


INITS = ("timm", "reference")  # --init: makd's (timm's zero-init, aux rows at zero) or the reference code's


class StudentNet(nn.Module):
    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, extra_dim: int = 0, zero_aux: bool = True):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.extra_dim = extra_dim
        self.fc = nn.Linear(num_features, num_classes + extra_dim)
        if extra_dim and zero_aux:
            # The extra outputs start at zero: with a random init and the papers' weights (lambda 40,
            # alpha 4) the first steps' aux gradients are large enough to stall the backbone at chance
            # accuracy (seen on Fashion-MNIST). From zero, the head learns first and the backbone's
            # aux gradient grows with it; the objective itself is unchanged.
            with torch.no_grad():
                self.fc.weight[num_classes:].zero_()
                self.fc.bias[num_classes:].zero_()

    def forward_features(self, x):
        return self.backbone(x)

    def forward(self, x, return_features: bool = False):
        feats = self.backbone(x)
        out = self.fc(feats)
        logits, extra = out[:, : self.num_classes], out[:, self.num_classes:]
        if return_features:
            return logits, extra, feats
        return logits, extra


def _torchvision_backbone(name: str) -> tuple[nn.Module, int]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    for attr in ("fc", "classifier", "heads"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        last = head[-1] if isinstance(head, nn.Sequential) else head
        num_features = last.in_features
        # Only the last Linear goes (StudentNet.fc replaces it): what precedes it stays, e.g. MobileNetV2's Dropout(0.2).
        setattr(model, attr, nn.Sequential(*head[:-1]) if isinstance(head, nn.Sequential) else nn.Identity())
        return model, num_features
    raise MakdError(f"cannot find the classifier of torchvision model {name}")


def _adapt_small_images(model: nn.Module, image_size: int) -> None:
    """Small images: the ImageNet stem (7x7 conv, stride 2, then max-pool) would shrink a 28 px image
    to 7 px before the first block. A 3x3 stride-1 conv keeps twice the resolution; the max-pool
    stays, because dropping it as well (the CIFAR recipe) quadruples the work of the first stage,
    measured at 2.1x slower training on a 2-core CPU (bench/small_image_stem.py, bench/RESULTS.md)."""
    if image_size > SMALL_IMAGE:
        return
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (7, 7):
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)


def build_backbone(arch: str, image_size: int) -> tuple[nn.Module, int]:
    spec = STUDENTS.get(arch) if arch in STUDENTS else None
    if spec is None:
        # Any other timm name works too: users are not limited to the papers' students.
        import timm

        if not timm.is_model(arch):
            raise MakdError(f"unknown student {arch!r}; choose one of {', '.join(STUDENTS)} or a timm model name")
        spec = StudentSpec("timm", arch, "")
    if spec.library == "makd":
        model = SmallCNN()
        return model, model.num_features
    if spec.library == "timm":
        import timm

        model = timm.create_model(spec.name, pretrained=False, num_classes=0)
        num_features = model.num_features
    else:
        model, num_features = _torchvision_backbone(spec.name)
    if spec.name == "vit_b_16" and image_size != 224:
        raise MakdError("vit_b_16 needs --image-size 224")
    _adapt_small_images(model, image_size)
    return model, num_features


def _cached_pretrained(arch: str) -> nn.Module:
    """ImageNet weights from the local timm / Hugging Face / torch hub cache, never from the network."""
    spec = STUDENTS.get(arch) if arch in STUDENTS else StudentSpec("timm", arch, "")
    try:
        if spec.library == "timm":
            import timm
            from huggingface_hub import try_to_load_from_cache

            cfg = timm.models.get_pretrained_cfg(spec.name)
            hub_id = (getattr(cfg, "hf_hub_id", None) or "") if cfg else ""
            cached = None
            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname) if hub_id else None
                if isinstance(hit, str):
                    cached = hit
                    break
            if cached is None:
                raise FileNotFoundError(f"{hub_id or spec.name} not in the Hugging Face cache")
            return timm.create_model(spec.name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": cached})
        import torchvision

        weights = torchvision.models.get_model_weights(spec.name).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.exists():
            raise FileNotFoundError(cached)
        return torchvision.models.get_model(spec.name, weights=weights)
    except Exception as exc:  # offline misses surface as many exception types
        raise MakdError(
            f"no cached pretrained weights for {arch} ({type(exc).__name__}); download them once with network access, "
            "or pass --pretrained FILE"
        ) from None


# torchvision's first ImageNet weights under the file names older code loads them by (LaViD, LEAD++:
# main.py:56 ``resnet50-19c8e357.pth``); the same tensors as IMAGENET1K_V1's current file names.
LEGACY_TORCHVISION_FILES = {"resnet18": "resnet18-5c106cde.pth", "resnet34": "resnet34-333f7ec4.pth", "resnet50": "resnet50-19c8e357.pth"}


def torchvision_weights_file(arch: str) -> Path:
    """torchvision's IMAGENET1K_V1 weights of ``arch`` in the local torch hub cache (``--pretrained torchvision``);
    never downloaded: the same offline rule as ``cache``."""
    import torchvision

    spec = STUDENTS.get(arch) if arch in STUDENTS else StudentSpec("timm", arch, "")
    name = spec.name
    try:
        weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise MakdError(f"--pretrained torchvision: torchvision has no ImageNet weights for {arch}; use `cache` or a weights file") from None
    v1 = getattr(weights, "IMAGENET1K_V1", None) or weights.DEFAULT
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for fname in (Path(v1.url).name, LEGACY_TORCHVISION_FILES.get(name, "")):
        if fname and (folder / fname).is_file():
            return folder / fname
    raise MakdError(f"--pretrained torchvision: {folder / Path(v1.url).name} is not in the torch hub cache; download it once with "
                    f"network access (torchvision.models.get_model({name!r}, weights='IMAGENET1K_V1')), or pass --pretrained FILE")


def load_pretrained(backbone: nn.Module, pretrained: str, arch: str = "") -> None:
    """``pretrained`` is ``cache`` (weights already in the local model cache), ``torchvision`` (torchvision's
    IMAGENET1K_V1 file in the torch hub cache, the references' weights; timm's ResNets share its layer names)
    or a local weights file (.pt/.pth/.safetensors); nothing is downloaded here."""
    if pretrained == "torchvision":
        pretrained = str(torchvision_weights_file(arch))
    if pretrained == "cache":
        state = _cached_pretrained(arch).state_dict()
        own = backbone.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        backbone.load_state_dict(usable, strict=False)
        return
    path = Path(os.path.expanduser(pretrained))
    if not path.exists():
        raise MakdError(
            f"pretrained weights {path} not found; give a local .pth/.safetensors file "
            "(makd trains offline and does not download weights)"
        )
    if not path.is_file():
        raise MakdError(f"--pretrained {path} is a folder; give a weights file (.pth/.pt/.safetensors) or `cache`")
    state = _read_weights(path)
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise MakdError(f"no tensor in {path} matches the student's layers; is it the same architecture?")
    backbone.load_state_dict(usable, strict=False)


def _read_weights(path: Path) -> dict:
    """A state dict of tensors from a weights file: a plain state dict, one under ``state_dict`` or
    ``model``, or makd's own checkpoint (whose backbone keys carry the ``backbone.`` prefix)."""
    hint = "give a .pth/.pt/.safetensors state dict or a best.pt from `makd train`"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns about foreign pickles on stderr: the one line below says it
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except BaseException as exc:  # torch/safetensors raise many types for a bad file (EOFError when empty)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise MakdError(f"--pretrained {path} is not a readable weights file ({type(exc).__name__}); {hint}") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise MakdError(f"--pretrained {path} holds no state dict of named tensors; {hint}")
    if any(k.startswith("backbone.") for k in state):  # makd's own checkpoint (StudentNet): keep the backbone
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def reference_init(backbone: nn.Module) -> int:
    """Undo timm's zero-init of the last batch-norm scale of each residual block (``zero_init_last``): the
    references' ResNets (LaViD ``zero_init_residual=False``, MaKD's mdistiller ResNet) start it at 1, as
    ``nn.BatchNorm2d`` does. Returns how many layers were reset. Convolutions need nothing: timm's
    kaiming-normal fan-out is the references' init."""
    reset = 0
    for m in backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None and not bool(m.weight.detach().any()):
            with torch.no_grad():
                m.weight.fill_(1.0)
            reset += 1
    return reset


def build_student(arch: str, num_classes: int, extra_dim: int = 0, image_size: int = 224, pretrained: str | None = None,
                  init: str = "timm") -> StudentNet:
    """``init``: ``timm`` (timm's zero-init of residual BN scales; the extra outputs' rows start at zero) or
    ``reference`` (BN scales at 1 and every head row PyTorch's default ``nn.Linear`` init, as LaViD's and MaKD's code)."""
    if init not in INITS:
        raise MakdError(f"--init {init!r}: choose {' or '.join(INITS)}")
    backbone, num_features = build_backbone(arch, image_size)
    if init == "reference":
        reference_init(backbone)
    if pretrained:
        load_pretrained(backbone, pretrained, arch)
    return StudentNet(backbone, num_features, num_classes, extra_dim, zero_aux=init == "timm")


def student_from_checkpoint(ckpt: dict) -> StudentNet:
    if ckpt.get("task") == "detection":  # a detector's weights are no classifier's: say so, not "damaged"
        raise MakdError("the checkpoint is a detector (makd train --task detection): `makd eval` gives its COCO AP "
                        "and `makd inspect --view curves` its losses; other views and teachers need a classifier")
    model = build_student(ckpt["arch"], ckpt["num_classes"], int(ckpt["head"].get("extra_dim", 0)), int(ckpt.get("image_size", 224)))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:  # tampered arch, num_classes or head: the weights no longer fit the network
        raise MakdError(
            f"the checkpoint's weights do not fit a {ckpt['arch']} with {ckpt['num_classes']} classes and "
            f"{ckpt['head'].get('extra_dim', 0)} extra outputs; the checkpoint is damaged, retrain it with `makd train`"
        ) from None
    model.eval()
    return model

"""Faster R-CNN + FPN (torchvision) with MaKD's aspect head on the backbone's pooled features.

``build_detector("resnet50", ...)`` is torchvision's ``fasterrcnn_resnet50_fpn`` (v1) assembled from its
parts, ``"resnet18"`` the same detector on a ResNet-18 FPN backbone (``resnet_fpn_backbone``) and
``"mobilenet_v2"`` on MobileNet-V2's blocks at strides 4-32 (24, 32, 96, 320 channels) under the same
FPN: the three students of MaKD's Table 7. As in torchvision's builders: with ImageNet weights (``--pretrained``)
the backbone's batch norm is frozen and its first two stages stay fixed (3 trainable stages, Detectron2's
FREEZE_AT 2); from random weights every stage trains with ordinary batch norm.

The aspect head (makd.txt section 4: "we add features to the backbone network ... and apply a
multi-aspect logit loss"): one ``Linear(C5 channels, Q)`` on the global average of the last backbone
stage (512 channels for ResNet-18, 2048 for ResNet-50, 320 for MobileNet-V2), pooled over each image's own area (not the padding
that batches images of different sizes), so the backbone learns the MLLM's per-image answers the way
MaKD's widened classifier head does. Its weights start at zero, as the classifier's extra outputs do.

The per-object option (``aspect_level="object"``, chosen by targets extracted from ``--data
coco-objects:PATH``): the head reads the box head's 1024-d RoI representation of each ground-truth
box (RoIAlign on the FPN, then the two fully connected layers the box classifier reads), one row per
object, trained against the MLLM's answers about that object's crop. Pooling the box itself rather
than the proposals matched to it gives exactly one row per object; matched proposals overlap it by
IoU >= 0.5 and read nearly the same features.

With bf16 autocast (``makd train`` on CUDA) the backbone and FPN run in bf16 and the RPN and box heads
in fp32 (box coordinates).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from makd_cli.errors import MakdError

ARCHS = ("resnet18", "resnet50", "mobilenet_v2")
# MobileNet-V2's FPN inputs: the last block of each stride (4, 8, 16, 32), as Detectron2's MobileNetV2-FPN
MV2_STAGES, MV2_CHANNELS = {"3": "0", "6": "1", "13": "2", "17": "3"}, [24, 32, 96, 320]
ASPECT_LEVELS = ("image", "object")
# COCO's 1x recipe: multi-scale training on the shorter side, 800 at test, longer side at most 1333.
TRAIN_MIN_SIZES = (640, 672, 704, 736, 768, 800)
TEST_MIN_SIZE, MAX_SIZE = 800, 1333


def image_sizes(image_size: int | None) -> tuple[tuple[int, ...], int, int]:
    """(training shorter sides, test shorter side, longer-side cap): COCO's, or one size for ``--image-size``."""
    if image_size is None:
        return TRAIN_MIN_SIZES, TEST_MIN_SIZE, MAX_SIZE
    return (image_size,), image_size, math.ceil(image_size * MAX_SIZE / TEST_MIN_SIZE)


class AspectDetector(nn.Module):
    """A torchvision Faster R-CNN whose forward also returns the aspect logits (None without a head).

    Training: ``(losses dict, aspect logits)``; evaluation: ``(detections per image, aspect logits)``,
    detections in the input images' coordinates with labels 1..C. Aspect logits: one row per image,
    or per ground-truth box at the object level (None when no boxes are given)."""

    def __init__(self, detector: nn.Module, aspect_dim: int = 0, aspect_level: str = "image"):
        super().__init__()
        if aspect_level not in ASPECT_LEVELS:
            raise MakdError(f"aspect level {aspect_level!r}: choose {' or '.join(ASPECT_LEVELS)}")
        self.detector = detector
        self.aspect_dim, self.aspect_level = aspect_dim, aspect_level
        self.aspect_head = None
        if aspect_dim:
            if aspect_level == "image":
                width = detector.backbone.fpn.inner_blocks[-1][0].in_channels  # the last stage, C5
            else:
                width = detector.roi_heads.box_head.fc7.out_features  # the box head's RoI representation
            self.aspect_head = nn.Linear(width, aspect_dim)
            nn.init.zeros_(self.aspect_head.weight)
            nn.init.zeros_(self.aspect_head.bias)

    def pooled_c5(self, c5: Tensor, sizes: list[tuple[int, int]], padded: tuple[int, int]) -> Tensor:
        """Mean of the last stage over each image's own region of the padded batch."""
        rows = []
        for i, (h, w) in enumerate(sizes):
            fh = max(1, math.ceil(h * c5.shape[-2] / padded[0]))
            fw = max(1, math.ceil(w * c5.shape[-1] / padded[1]))
            rows.append(c5[i, :, :fh, :fw].mean(dim=(1, 2)))
        return torch.stack(rows)

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        d = self.detector
        if self.training and targets is None:
            raise MakdError("the detector trains on images with their boxes")
        original = [tuple(im.shape[-2:]) for im in images]
        batch, targets = d.transform(images, targets)
        body = d.backbone.body(batch.tensors)
        features = d.backbone.fpn(body)
        # Under bf16 autocast (CUDA) only the backbone runs in bf16: the RPN and box heads decode box
        # coordinates in their inputs' dtype, and bf16's 8 bits would put a box at 1000 px off by 4 px.
        with torch.autocast(batch.tensors.device.type, enabled=False):
            features = type(features)((k, v.float()) for k, v in features.items())
            proposals, rpn_losses = d.rpn(batch, features, targets)
            detections, roi_losses = d.roi_heads(features, proposals, batch.image_sizes, targets)
            aspect = None
            if self.aspect_head is not None and self.aspect_level == "object" and targets is not None:
                # one row per ground-truth box, images in batch order: the RoI features of the box itself
                rois = d.roi_heads.box_roi_pool(features, [t["boxes"] for t in targets], batch.image_sizes)
                aspect = self.aspect_head(d.roi_heads.box_head(rois))
        if self.aspect_head is not None and self.aspect_level == "image":
            c5 = list(body.values())[-1]
            aspect = self.aspect_head(self.pooled_c5(c5, batch.image_sizes, tuple(batch.tensors.shape[-2:])))
        if self.training:
            return {**rpn_losses, **roi_losses}, aspect
        return d.transform.postprocess(detections, batch.image_sizes, original), aspect


def build_detector(arch: str, num_classes: int, aspect_dim: int = 0, pretrained: str | None = None,
                   image_size: int | None = None, rois_per_image: int = 512, proposals: int = 2000,
                   frozen_norm: bool | None = None, aspect_level: str = "image") -> AspectDetector:
    """Faster R-CNN + FPN for ``num_classes`` object classes (the background is added here).

    ``rois_per_image`` (RoIs sampled per image for the box head's loss, Detectron2's 512) and
    ``proposals`` (RPN proposals kept per image in training, torchvision's 2000) set most of a
    training step's cost; smaller values suit tiny images (tests, CPU trials)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.misc import FrozenBatchNorm2d

    from makd_cli.students.build import load_pretrained

    if arch not in ARCHS:
        raise MakdError(f"--task detection builds Faster R-CNN + FPN on {', '.join(ARCHS)}, not {arch!r}; pass --student "
                        "resnet18, resnet50 or mobilenet_v2")
    frozen = bool(pretrained) if frozen_norm is None else frozen_norm  # a checkpoint is rebuilt as it was trained
    norm = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    if arch == "mobilenet_v2":
        from torchvision.models import mobilenet_v2
        from torchvision.models.detection.backbone_utils import BackboneWithFPN

        net = mobilenet_v2(weights=None, norm_layer=norm)
        if pretrained:
            load_pretrained(net, pretrained, arch)  # torchvision's key names: features.N...
        if frozen:  # the stem and the stride-4 stage stay fixed, as FREEZE_AT 2 for the ResNets
            for p in net.features[:4].parameters():
                p.requires_grad_(False)
        backbone = BackboneWithFPN(net.features, MV2_STAGES, MV2_CHANNELS, 256)
    else:
        backbone = resnet_fpn_backbone(backbone_name=arch, weights=None, norm_layer=norm, trainable_layers=3 if frozen else 5)
        if pretrained:
            load_pretrained(backbone.body, pretrained, arch)  # ResNet key names: conv1, layer1, ... (timm and torchvision alike)
    train_sizes, _, max_size = image_sizes(image_size)
    # torchvision's transform draws the training size from min_size and tests at its last entry (800).
    detector = FasterRCNN(backbone, num_classes=num_classes + 1, min_size=train_sizes, max_size=max_size,
                          box_batch_size_per_image=rois_per_image, rpn_post_nms_top_n_train=proposals,
                          rpn_pre_nms_top_n_train=proposals)
    return AspectDetector(detector, aspect_dim, aspect_level)


"""Students: every named architecture builds with C + E outputs; pretrained weights load from files only."""

import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.students import build_student


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv1", "mobilenet_v2", "shufflenet_v2", "efficientnet_b0", "small_cnn"])
def test_students_build_and_split_outputs(arch):
    model = build_student(arch, num_classes=5, extra_dim=7, image_size=32).eval()
    logits, extra, feats = model(torch.randn(2, 3, 32, 32), return_features=True)
    assert logits.shape == (2, 5) and extra.shape == (2, 7) and feats.shape[0] == 2


def test_small_images_get_a_3x3_stem():
    assert build_student("resnet18", 3, 0, 28).backbone.conv1.kernel_size == (3, 3)
    assert build_student("resnet18", 3, 0, 224).backbone.conv1.kernel_size == (7, 7)


def test_pretrained_from_file_and_cache_miss(tmp_path):
    src = build_student("small_cnn", 3, 0, 32)
    torch.save(src.backbone.state_dict(), tmp_path / "w.pth")
    dst = build_student("small_cnn", 3, 0, 32, pretrained=str(tmp_path / "w.pth"))
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(v, dst.backbone.state_dict()[k])
    with pytest.raises(MakdError, match="not found"):
        build_student("small_cnn", 3, 0, 32, pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(MakdError, match="no cached pretrained weights"):
        build_student("mobilenet_v2", 3, 0, 32, pretrained="cache")
    with pytest.raises(MakdError, match="unknown student"):
        build_student("resnet9000", 3)


def test_extra_outputs_start_at_zero_and_class_outputs_do_not():
    model = build_student("small_cnn", 4, 6, 32).eval()
    logits, extra = model(torch.randn(3, 3, 32, 32))
    assert torch.count_nonzero(extra) == 0 and torch.count_nonzero(logits) > 0


def test_mobilenet_v2_keeps_its_dropout_before_the_new_head():
    # torchvision's classifier is Sequential(Dropout(0.2), Linear): only the Linear is replaced.
    model = build_student("mobilenet_v2", 3, 2, 32).eval()
    (drop,) = model.backbone.classifier
    assert isinstance(drop, torch.nn.Dropout) and drop.p == 0.2
    x = torch.randn(4, 3, 32, 32)
    _, _, plain = model(x, return_features=True)
    drop.train()  # batch norm stays in eval mode: only the dropout differs
    torch.manual_seed(0)
    _, _, dropped = model(x, return_features=True)
    active, kept = plain != 0, dropped != 0  # ReLU6 already zeroes many features: count among the others
    assert 0.1 < 1 - kept[active].float().mean().item() < 0.3  # about 20 % of them dropped
    assert torch.allclose(dropped[kept], plain[kept] / 0.8, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    logits, extra = model(x)
    assert torch.allclose(torch.cat([logits, extra], 1), model.fc(dropped), atol=1e-6)

"""Object detection with multi-aspect distillation (MaKD section 4, Table 7): ``makd train --task detection``.

- ``model.py``: torchvision's Faster R-CNN + FPN (ResNet-18, ResNet-50, MobileNet-V2) and the aspect head.
- ``data.py``: COCO-format images and boxes as detector batches (``data/coco.py`` reads the files).
- ``train.py``: the task on the shared engine (``train/engine.py``), COCO's 1x schedule.
- ``evaluate.py``: COCO AP through pycocotools for ``makd eval``, seeds aggregated.

This module stays free of heavy imports: ``train/tasks.py`` reads the schedule from it.
"""

# COCO's 1x schedule (Detectron2's, used by the baselines MaKD's Table 7 cites), counted in epochs:
# 90k iterations x 16 images = 12 epochs of COCO train2017; --batch-size 16 and --momentum 0.9 agree.
SCHEDULE_1X = {"epochs": 12, "lr": 0.02, "weight_decay": 1e-4}

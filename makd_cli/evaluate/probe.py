"""``makd eval --probe``: the self-supervised protocol of LEAD (lead-supplementary.txt section 10), as
its public code (HuiGuanLab/LEAD-pp ``linear_probing.py``, ``retrieval.py``) runs it.

The student is frozen and read at its backbone features (before the class head).
- Linear probe, ``--probe sgd`` (the default, the public code's): a linear layer (weights N(0, 0.01),
  bias 0) trained by SGD (lr 30, momentum 0.9, no weight decay, batch 256, 100 epochs, lr x 0.1 at
  epochs 60 and 80) on L2-normalised features of freshly augmented training images every epoch
  (random resized crop, horizontal flip); scored on the test split after the last epoch (the public
  code prints the best epoch's test top-1, chosen on the test split: reported beside it as
  ``linear_top1_best``). ``--probe quick``: a logistic regression (scikit-learn) on standardised
  features of the un-augmented images, in seconds.
- Retrieval (nearest-neighbour classification, no parameters fitted), by cosine similarity:
  ``--retrieval test`` (the default, the public code's): every test image queries the rest of the
  test split (leave-one-out); ``train-test``: test images query the training split. Rank-1 / Rank-5 =
  share of queries with a same-class image among the first 1 / 5 results, mAP = mean over queries of
  the average precision of the whole ranked gallery. All in percent.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from makd_cli.errors import MakdError
from makd_cli.evaluate.metrics import topk_accuracy


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 num_classes: int | None = None, c: float = 1.0, max_iter: int = 1000, seed: int = 0) -> dict:
    """Top-1 / top-5 (%) of a logistic regression trained on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_y, test_y = np.asarray(train_y, np.int64), np.asarray(test_y, np.int64)
    classes = np.unique(train_y)
    if len(classes) < 2:
        raise MakdError("the linear probe needs training images of at least 2 classes")
    C = int(num_classes or max(train_y.max(), test_y.max()) + 1)
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    scores = np.full((len(test_y), C), -np.inf)
    scores[:, clf.classes_] = clf.predict_log_proba(scaler.transform(test_x))  # classes unseen in training never win
    return {"top1": topk_accuracy(scores, test_y, 1), "top5": topk_accuracy(scores, test_y, 5)}


PROBE_PROTOCOLS = ("sgd", "quick")
RETRIEVAL_PROTOCOLS = ("test", "train-test")


def _l2(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sgd_linear_probe(train_features: Callable[[int], tuple[np.ndarray, np.ndarray]], test_x: np.ndarray, test_y: np.ndarray,
                     num_classes: int, *, lr: float = 30.0, batch_size: int = 256, epochs: int = 100,
                     milestones=(60, 80), momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0) -> dict:
    """The public code's linear probe. ``train_features(epoch)`` gives (features, labels) of that epoch's
    augmented training images (epochs count from 1); features are L2-normalised here, as the public
    code's are. Returns top-1 / top-5 (%) after the last epoch and the best epoch's (chosen on the test
    split, as the public code reports it)."""
    import torch
    import torch.nn.functional as F

    if epochs < 1:
        raise MakdError("--probe-epochs must be at least 1")
    gen = torch.Generator().manual_seed(seed)
    test_t = torch.from_numpy(_l2(test_x))
    test_y = np.asarray(test_y, np.int64)
    clf = torch.nn.Linear(test_t.shape[1], num_classes)
    with torch.no_grad():
        clf.weight.normal_(0.0, 0.01, generator=gen)
        clf.bias.zero_()
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    last, best = None, None
    for epoch in range(1, epochs + 1):
        for group in opt.param_groups:  # the public code's step schedule
            group["lr"] = lr * 0.1 ** sum(epoch >= m for m in milestones)
        x, y = train_features(epoch)
        x, y = torch.from_numpy(_l2(x)), torch.as_tensor(np.asarray(y, np.int64))
        if len(np.unique(y.numpy())) < 2:
            raise MakdError("the linear probe needs training images of at least 2 classes")
        order = torch.randperm(len(x), generator=gen)
        # drop_last as the public code, unless the split is smaller than one batch
        n_batches = max(1, len(x) // batch_size)
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss = F.cross_entropy(clf(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scores = clf(test_t).numpy()
        last = {"top1": topk_accuracy(scores, test_y, 1), "top5": topk_accuracy(scores, test_y, 5), "epoch": epoch}
        if best is None or last["top1"] > best["top1"]:
            best = last
    return {"top1": last["top1"], "top5": last["top5"], "best_top1": best["top1"], "best_top5": best["top5"],
            "best_epoch": best["epoch"], "epochs": epochs}


def retrieval_metrics(query_x: np.ndarray, query_y: np.ndarray, gallery_x: np.ndarray | None = None,
                      gallery_y: np.ndarray | None = None, ks=(1, 5), block: int = 1024) -> dict:
    """Rank-k (%) and mAP (%) of cosine-similarity retrieval; queries without any same-class gallery
    image are left out of the mAP. Without a gallery, leave-one-out: every query searches the other
    queries (the public code's protocol within the test split)."""
    leave_one_out = gallery_x is None
    q = _l2(query_x)
    g = q if leave_one_out else _l2(gallery_x)
    query_y = np.asarray(query_y)
    gallery_y = query_y if leave_one_out else np.asarray(gallery_y)
    hits = {k: 0 for k in ks}
    aps = []
    for s in range(0, len(q), block):
        sims = q[s:s + block] @ g.T
        if leave_one_out:  # the query itself goes last and is cut off
            rows = np.arange(sims.shape[0])
            sims[rows, s + rows] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")
        if leave_one_out:
            order = order[:, :-1]
        rel = gallery_y[order] == query_y[s:s + block, None]
        for k in ks:
            hits[k] += int(rel[:, :k].any(axis=1).sum())
        n_rel = rel.sum(axis=1)
        precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
        ap = (precision * rel).sum(axis=1) / np.maximum(n_rel, 1)
        aps += ap[n_rel > 0].tolist()
    n = max(len(q), 1)
    result = {f"rank{k}": 100.0 * hits[k] / n for k in ks}
    result["map"] = 100.0 * float(np.mean(aps)) if aps else 0.0
    return result


def probe_augmentation(size: int):
    """The public code's training augmentation for the probe: random resized crop and horizontal flip."""
    from torchvision import transforms as T

    from makd_cli.data.transforms import MEAN, STD

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])


def probe_checkpoint(path: str, data: str | None = None, batch_size: int = 256, device: str = "cpu", *,
                     protocol: str = "sgd", epochs: int = 100, retrieval: str = "test") -> dict:
    """Linear probe (``protocol`` sgd or quick) and retrieval (``retrieval`` test: leave-one-out in the
    test split; train-test: test queries, training gallery) of one checkpoint's backbone features."""
    import torch

    from makd_cli.data.transforms import eval_transform
    from makd_cli.evaluate.predict import predict
    from makd_cli.evaluate.report import checkpoint_and_dataset
    from makd_cli.students import student_from_checkpoint

    if protocol not in PROBE_PROTOCOLS:
        raise MakdError(f"--probe {protocol!r}: choose one of {', '.join(PROBE_PROTOCOLS)}")
    if retrieval not in RETRIEVAL_PROTOCOLS:
        raise MakdError(f"--retrieval {retrieval!r}: choose one of {', '.join(RETRIEVAL_PROTOCOLS)}")
    ckpt, data, ds = checkpoint_and_dataset(path, data, "probe")
    model = student_from_checkpoint(ckpt).to(device)
    seed = ckpt["config"].get("seed", 0)
    tf = eval_transform(ckpt["image_size"], ckpt.get("native_size"), ckpt["config"].get("test_resize"))
    te = predict(model, ds.test, tf, batch_size, 0, device, features=True)
    tr = None
    if protocol == "quick" or retrieval == "train-test":
        tr = predict(model, ds.train, tf, batch_size, 0, device, features=True)
    if protocol == "sgd":
        augment = probe_augmentation(ckpt["image_size"])

        def train_features(epoch: int):
            torch.manual_seed(seed * 100_003 + epoch)  # this epoch's crops and flips (workers 0: drawn here)
            pv = predict(model, ds.train, augment, batch_size, 0, device, features=True)
            return pv["features"], pv["labels"]

        probe = sgd_linear_probe(train_features, te["features"], te["labels"], len(ds.classes), epochs=epochs, seed=seed)
    else:
        probe = linear_probe(tr["features"], tr["labels"], te["features"], te["labels"], len(ds.classes), seed=seed)
    if retrieval == "test":
        ret = retrieval_metrics(te["features"], te["labels"])
    else:
        ret = retrieval_metrics(te["features"], te["labels"], tr["features"], tr["labels"])
    result = {"checkpoint": str(path), "data": data, "method": ckpt["config"]["method"], "student": ckpt["arch"],
              "probe": protocol, "retrieval": retrieval,
              "linear_top1": probe["top1"], "linear_top5": probe["top5"], "rank1": ret["rank1"], "rank5": ret["rank5"],
              "map": ret["map"], "train_images": len(ds.train), "test_images": len(ds.test),
              "feature_dim": int(te["features"].shape[1])}
    if protocol == "sgd":
        result.update({"linear_top1_best": probe["best_top1"], "linear_top5_best": probe["best_top5"],
                       "best_epoch": probe["best_epoch"], "probe_epochs": probe["epochs"]})
    return result

"""``makd eval --probe``: the self-supervised protocol of LEAD (lead-supplementary.txt section 10).

The student is frozen and read at its backbone features (before the class head).
- Linear probe: a logistic-regression classifier (scikit-learn) fitted on the training split's
  features (standardised) and scored on the test split: top-1 and top-5 accuracy.
- Retrieval (nearest-neighbour classification, no parameters fitted): every test image queries the
  training split as the gallery by cosine similarity; Rank-1 / Rank-5 = share of queries with a
  same-class image among the first 1 / 5 results, mAP = mean over queries of the average precision
  of the whole ranked gallery. All in percent.
"""

from __future__ import annotations

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


def retrieval_metrics(query_x: np.ndarray, query_y: np.ndarray, gallery_x: np.ndarray, gallery_y: np.ndarray,
                      ks=(1, 5), block: int = 1024) -> dict:
    """Rank-k (%) and mAP (%) of cosine-similarity retrieval; queries without any same-class gallery
    image are left out of the mAP."""
    q = np.asarray(query_x, np.float32)
    g = np.asarray(gallery_x, np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    query_y, gallery_y = np.asarray(query_y), np.asarray(gallery_y)
    hits = {k: 0 for k in ks}
    aps = []
    for s in range(0, len(q), block):
        sims = q[s:s + block] @ g.T
        order = np.argsort(-sims, axis=1, kind="stable")
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


def probe_checkpoint(path: str, data: str | None = None, batch_size: int = 256, device: str = "cpu") -> dict:
    """Linear probe and retrieval of one checkpoint: features of the training split (probe training
    set, retrieval gallery) and the test split (probe test set, queries)."""
    from makd_cli.data.transforms import eval_transform
    from makd_cli.evaluate.predict import predict
    from makd_cli.evaluate.report import checkpoint_and_dataset
    from makd_cli.students import student_from_checkpoint

    ckpt, data, ds = checkpoint_and_dataset(path, data, "probe")
    model = student_from_checkpoint(ckpt).to(device)
    tf = eval_transform(ckpt["image_size"], ckpt.get("native_size"))
    tr = predict(model, ds.train, tf, batch_size, 0, device, features=True)
    te = predict(model, ds.test, tf, batch_size, 0, device, features=True)
    probe = linear_probe(tr["features"], tr["labels"], te["features"], te["labels"], len(ds.classes),
                         seed=ckpt["config"].get("seed", 0))
    ret = retrieval_metrics(te["features"], te["labels"], tr["features"], tr["labels"])
    return {"checkpoint": str(path), "data": data, "method": ckpt["config"]["method"], "student": ckpt["arch"],
            "linear_top1": probe["top1"], "linear_top5": probe["top5"], "rank1": ret["rank1"], "rank5": ret["rank5"],
            "map": ret["map"], "train_images": len(ds.train), "test_images": len(ds.test),
            "feature_dim": int(tr["features"].shape[1])}

"""Numerics in one place (numpy): softmax, log-sum-exp and the logistic function, each stable in float64."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """``softmax(z / temperature)`` along ``axis``; the row maximum is subtracted first so exp never overflows."""
    z = np.asarray(z) / temperature
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logsumexp(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(z)
    mx = z.max(axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.exp(z - mx).sum(axis=axis))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))

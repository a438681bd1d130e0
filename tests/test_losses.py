"""The public losses against their formulas (numpy by hand) and the KD-family method terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.losses import (dkd, kd, lavid_mse, lead_weighted_kl, logit_standardize, makd_bce, makd_kl, mlkd,
                             normalized_entropy)
from makd_cli.methods import Batch, MethodContext, build_terms

S = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
T_ = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 2.5]])


def t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64))


def softmax(z, T=1.0):
    e = np.exp(np.asarray(z, dtype=np.float64) / T)
    return e / e.sum(axis=-1, keepdims=True)


def kl_rows(p, q):
    return (p * np.log(p / q)).sum(axis=-1)


# --- kd ------------------------------------------------------------------------------------------

def test_kd_matches_formula():
    for T in (1.0, 4.0):
        want = kl_rows(softmax(T_, T), softmax(S, T)).mean() * T * T
        assert kd(t(S), t(T_), T).item() == pytest.approx(want, rel=1e-10)


def test_kd_identical_is_zero_and_shift_invariant():
    assert kd(t(S), t(S), 4.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kd(t(S), t(S + 7.0), 2.0).item() == pytest.approx(0.0, abs=1e-12)


# --- dkd -----------------------------------------------------------------------------------------

def dkd_numpy(s, tt, y, alpha, beta, T):
    ps, pt = softmax(s, T), softmax(tt, T)
    total = 0.0
    for i, c in enumerate(y):
        bs = np.array([ps[i, c], 1 - ps[i, c]])
        bt = np.array([pt[i, c], 1 - pt[i, c]])
        tckd = (bt * np.log(bt / bs)).sum()
        others = [k for k in range(s.shape[1]) if k != c]
        qs, qt = softmax(s[i, others], T), softmax(tt[i, others], T)
        nckd = (qt * np.log(qt / qs)).sum()
        total += alpha * tckd + beta * nckd
    return total / len(y) * T * T


def test_dkd_matches_formula():
    y = [0, 2]
    for alpha, beta, T in ((1.0, 2.0, 4.0), (1.0, 8.0, 1.0), (0.5, 0.0, 2.0)):
        got = dkd(t(S), t(T_), torch.tensor(y), alpha, beta, T).item()
        assert got == pytest.approx(dkd_numpy(S, T_, y, alpha, beta, T), rel=1e-8)


def test_dkd_known_values():
    y = torch.tensor([0, 2])
    assert dkd(t(S), t(S), y).item() == pytest.approx(0.0, abs=1e-10)
    # alpha=0, two classes: the only non-target class has probability 1 for both -> NCKD 0.
    two = t([[1.0, 3.0]])
    assert dkd(two, t([[0.0, -2.0]]), torch.tensor([0]), alpha=0.0, beta=5.0).item() == pytest.approx(0.0, abs=1e-10)
    # beta=0, two classes: TCKD is the whole KL, so DKD equals KD.
    assert dkd(two, t([[0.0, -2.0]]), torch.tensor([0]), alpha=1.0, beta=0.0).item() == pytest.approx(
        kd(two, t([[0.0, -2.0]])).item(), rel=1e-10)
    # Only non-target logits differ and the target prob agrees: TCKD 0, NCKD = KL among non-targets.
    s, tt = np.array([[0.0, 1.0, 2.0]]), np.array([[0.0, 2.0, 1.0]])
    qs, qt = softmax(s[0, 1:], 4.0), softmax(tt[0, 1:], 4.0)
    assert dkd(t(s), t(tt), torch.tensor([0]), 1.0, 2.0, 4.0).item() == pytest.approx(2 * kl_rows(qt, qs) * 16, rel=1e-8)


# --- logit standardisation -----------------------------------------------------------------------

def test_logit_standardize_rows():
    z = torch.randn(5, 7, dtype=torch.float64) * 3 + 2
    out = logit_standardize(z)
    assert torch.allclose(out.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(out.std(1, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-6)
    want = (S - S.mean(1, keepdims=True)) / S.std(1, keepdims=True)
    assert np.allclose(logit_standardize(t(S)).numpy(), want, atol=1e-6)
    # scale and shift invariant; a constant row stays finite
    assert torch.allclose(logit_standardize(5 * z + 3), out, atol=1e-6)
    assert torch.isfinite(logit_standardize(torch.ones(1, 4))).all()


# --- mlkd ----------------------------------------------------------------------------------------

def mlkd_numpy(s, tt, temps):
    B, C = s.shape
    total = 0.0
    for T in temps:
        ps, pt = softmax(s, T), softmax(tt, T)
        total += kl_rows(pt, ps).mean() * T * T
        total += ((pt @ pt.T - ps @ ps.T) ** 2).sum() / B
        total += ((pt.T @ pt - ps.T @ ps) ** 2).sum() / C
    return total


def test_mlkd_matches_formula():
    assert mlkd(t(S), t(T_)).item() == pytest.approx(mlkd_numpy(S, T_, (2, 3, 4, 5, 6)), rel=1e-10)
    assert mlkd(t(S), t(T_), (4.0,)).item() == pytest.approx(mlkd_numpy(S, T_, (4.0,)), rel=1e-10)
    assert mlkd(t(S), t(S)).item() == pytest.approx(0.0, abs=1e-12)


# --- makd / lavid --------------------------------------------------------------------------------

def test_makd_bce_is_mean_elementwise_bce():
    x, p = S, np.array([[0.2, 1.0, 0.0], [0.5, 0.9, 0.1]])
    sig = 1 / (1 + np.exp(-x))
    want = -(p * np.log(sig) + (1 - p) * np.log(1 - sig)).mean()
    assert makd_bce(t(x), t(p)).item() == pytest.approx(want, rel=1e-10)


def test_makd_kl_zero_at_match():
    p = np.array([[0.2, 0.7], [0.5, 0.9]])
    assert makd_kl(t(np.log(p / (1 - p))), t(p)).item() == pytest.approx(0.0, abs=1e-10)


def test_lavid_mse_accepts_flat_or_shaped():
    rng = np.random.default_rng(0)
    aux, tgt = rng.normal(size=(2, 6)), rng.uniform(size=(2, 3, 2))
    want = ((aux.reshape(2, 3, 2) - tgt) ** 2).mean()
    assert lavid_mse(t(aux), t(tgt)).item() == pytest.approx(want, rel=1e-10)
    assert lavid_mse(t(aux.reshape(2, 3, 2)), t(tgt)).item() == pytest.approx(want, rel=1e-10)
    assert lavid_mse(t(aux), t(tgt.reshape(2, 6))).item() == pytest.approx(want, rel=1e-10)


# --- LEAD ----------------------------------------------------------------------------------------

def test_normalized_entropy():
    p = t([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    h = normalized_entropy(p)
    assert h.tolist() == pytest.approx([0.0, 1.0, math.log(2) / math.log(3)], abs=1e-10)


def test_lead_weighted_kl():
    p = softmax(T_)
    kl = kl_rows(p, softmax(S))
    # H=0: the full KL; H=1: nothing
    assert lead_weighted_kl(t(S), t(p), t([0.0, 0.0])).item() == pytest.approx(kl.mean(), rel=1e-10)
    assert lead_weighted_kl(t(S), t(p), t([1.0, 1.0])).item() == pytest.approx(0.0, abs=1e-12)
    h = np.array([0.5, 0.8])
    assert lead_weighted_kl(t(S), t(p), t(h)).item() == pytest.approx(((1 - h ** 2) * kl).mean(), rel=1e-10)
    # one-hot teacher rows (zeros) are fine: KL = -log q_target
    onehot = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    want = -np.log(softmax(S)[[0, 1], [1, 2]]).mean()
    assert lead_weighted_kl(t(S), t(onehot), t([0.0, 0.0])).item() == pytest.approx(want, rel=1e-10)


# --- gradients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["kd", "dkd", "mlkd", "lead", "ls"])
def test_gradients_reach_student_only(name):
    s = torch.randn(4, 5, requires_grad=True)
    tt = torch.randn(4, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    loss = {
        "kd": lambda: kd(s, tt),
        "dkd": lambda: dkd(s, tt, y),
        "mlkd": lambda: mlkd(s, tt),
        "lead": lambda: lead_weighted_kl(s, tt.softmax(1), normalized_entropy(tt.softmax(1))),
        "ls": lambda: kd(logit_standardize(s), logit_standardize(tt), 2.0),
    }[name]()
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert tt.grad is None or tt.grad.abs().sum() == 0


# --- method terms --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["kd", "dkd", "mlkd"])
@pytest.mark.parametrize("ls", [False, True])
def test_method_term_trains(spec, ls):
    torch.manual_seed(0)
    ctx = MethodContext(num_classes=3, epochs=2, options={"logit_standardize": ls})
    (term,) = build_terms(spec, ctx)
    assert term.needs_teacher and term.target_kinds == () and term.weight == 1.0 and term.extra_dim == 0
    x = torch.randn(16, 8)
    labels = torch.randint(0, 3, (16,))
    teacher = torch.randn(16, 3) * 3
    student = torch.nn.Linear(8, 3)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    batch = Batch(x, labels, torch.arange(16), epoch=0, teacher_logits=teacher)
    losses = []
    for _ in range(30):
        loss = term.loss(student(x), torch.zeros(16, 0), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_method_needs_teacher_logits():
    (term,) = build_terms("kd", MethodContext(num_classes=3))
    with pytest.raises(MakdError, match="--teacher-ckpt"):
        term.loss(torch.zeros(2, 3), torch.zeros(2, 0), Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2)))


def test_method_temperatures():
    (plain,) = build_terms("kd", MethodContext(num_classes=3))
    (ls,) = build_terms("kd", MethodContext(num_classes=3, options={"logit_standardize": True}))
    (ls_set,) = build_terms("kd", MethodContext(num_classes=3, options={"logit_standardize": True, "temperature": 3.0}))
    assert (plain.temperature, ls.temperature, ls_set.temperature) == (4.0, 2.0, 3.0)


def test_dkd_warmup():
    (d,) = build_terms("dkd", MethodContext(num_classes=3, epochs=240))
    assert d.warmup == 20 and d.ramp(0) == pytest.approx(1 / 20) and d.ramp(19) == 1.0 and d.ramp(100) == 1.0
    (short,) = build_terms("dkd", MethodContext(num_classes=3, epochs=2))
    assert short.warmup == 1 and short.ramp(0) == 1.0
    (mid,) = build_terms("dkd", MethodContext(num_classes=3, epochs=24))
    assert mid.warmup == 2
    s, tt, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    b0 = Batch(torch.zeros(4, 1), y, torch.arange(4), epoch=0, teacher_logits=tt)
    assert d.loss(s, torch.zeros(4, 0), b0).item() == pytest.approx(dkd(s, tt, y).item() / 20, rel=1e-5)

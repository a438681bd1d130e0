"""The public losses against their formulas (numpy by hand) and the KD-family method terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from makd_cli.errors import MakdError
from makd_cli.losses import (dkd, kd, lavid_mse, lead_weighted_kl, logit_standardize, makd_bce, makd_kl, mlkd,
                             mlkd_masks, mlkd_temperatures, normalized_entropy)
from makd_cli.methods import Batch, MethodContext, build_terms
from makd_cli.methods.base import ce_weight_of

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
    assert torch.allclose(out.std(1, unbiased=True), torch.ones(5, dtype=torch.float64), atol=1e-6)
    # the public code's normalize(): unbiased std (ddof 1) plus 1e-7
    want = (S - S.mean(1, keepdims=True)) / (S.std(1, ddof=1, keepdims=True) + 1e-7)
    assert np.allclose(logit_standardize(t(S)).numpy(), want, atol=1e-12)
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


def ls_numpy(z):
    return (z - z.mean(1, keepdims=True)) / (z.std(1, ddof=1, keepdims=True) + 1e-7)


def mlkd_reference_numpy(sw, tw, ss, ts, T, w, logit_stand, masks=True):
    """MLKD.forward_train of the public code (LaViD's mlkd.py / the LS repo), written out without its
    CE: kd_loss / cc_loss / bc_loss reduce to scalars, then ``(scalar * mask).mean()``."""
    def kd_loss(s, tt, temp):
        if logit_stand:
            s, tt = ls_numpy(s), ls_numpy(tt)
        return kl_rows(softmax(tt, temp), softmax(s, temp)).mean() * temp ** 2

    def cc_loss(s, tt, temp):
        ps, pt = softmax(s, temp), softmax(tt, temp)
        return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1]

    def bc_loss(s, tt, temp):
        ps, pt = softmax(s, temp), softmax(tt, temp)
        return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0]

    p = softmax(tw)
    conf = p.max(1)
    mask = conf <= np.percentile(conf, 50) if masks else np.ones(len(conf), bool)
    class_conf = p.sum(0)
    class_mask = class_conf <= np.percentile(class_conf, 50) if masks else np.ones(len(class_conf), bool)
    temps = (T, 3.0, 5.0, 2.0, 6.0)
    kd_weak = sum(w * (kd_loss(sw, tw, u) * mask).mean() for u in temps)
    cc_weak = sum(w * (cc_loss(sw, tw, u) * class_mask).mean() for u in temps)
    bc_weak = sum(w * (bc_loss(sw, tw, u) * mask).mean() for u in temps)
    if ss is None:
        return kd_weak + cc_weak + bc_weak
    # the reference's strong-view sum: T, 3, 5 on the strong view, then 2 and 6 on the weak one
    kd_strong = (w * kd_loss(ss, ts, T) + w * kd_loss(ss, ts, 3.0) + w * kd_loss(ss, ts, 5.0)
                 + w * kd_loss(sw, tw, 2.0) + w * kd_loss(sw, tw, 6.0))
    return kd_weak + kd_strong + cc_weak + bc_weak


@pytest.mark.parametrize("views", [1, 2])
@pytest.mark.parametrize("logit_stand", [False, True])
@pytest.mark.parametrize("masks", [True, False])
@pytest.mark.parametrize("B", [8, 7])  # even: the median interpolates; odd: it is one sample's confidence
def test_mlkd_matches_the_reference_code(views, logit_stand, masks, B):
    rng = np.random.default_rng(B + 10 * views)
    C = 6
    sw, tw, ss, ts = (rng.normal(size=(B, C)) * k for k in (1.0, 3.0, 1.5, 3.0))
    strong = dict(strong_student=t(ss), strong_teacher=t(ts)) if views == 2 else {}
    for T, w in ((1.0, 0.5), (4.0, 1.0)):
        got = mlkd(t(sw), t(tw), mlkd_temperatures(T), masks=masks, standardize=logit_stand, weight=w, **strong).item()
        want = mlkd_reference_numpy(sw, tw, ss if views == 2 else None, ts, T, w, logit_stand, masks)
        assert got == pytest.approx(want, rel=1e-9)


def test_mlkd_masks_keep_the_low_confidence_half():
    tw = np.array([[5.0, 0, 0], [1.0, 0, 0], [0, 3.0, 0], [0, 0, 0.5]])
    sample, cls = mlkd_masks(t(tw))
    conf = softmax(tw).max(1)
    assert sample.tolist() == (conf <= np.median(conf)).tolist() and sample.sum() == 2
    class_conf = softmax(tw).sum(0)
    assert cls.tolist() == (class_conf <= np.median(class_conf)).tolist()


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
    assert term.needs_teacher and term.target_kinds == () and term.extra_dim == 0
    x, x_strong = torch.randn(16, 8), torch.randn(16, 8)
    labels = torch.randint(0, 3, (16,))
    teacher, teacher_strong = torch.randn(16, 3) * 3, torch.randn(16, 3) * 3
    student = torch.nn.Linear(8, 3)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        # epoch 1: past dkd's 1-epoch warm-up (epoch 0 trains on CE alone, as LaViD counts it)
        batch = Batch(x, labels, torch.arange(16), epoch=1, teacher_logits=teacher, strong_logits=student(x_strong),
                      strong_teacher_logits=teacher_strong)
        loss = term.loss(student(x), torch.zeros(16, 0), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1]) and losses[-1] < 0.8 * losses[0]


def test_method_needs_teacher_logits():
    (term,) = build_terms("kd", MethodContext(num_classes=3))
    with pytest.raises(MakdError, match="--teacher-ckpt"):
        term.loss(torch.zeros(2, 3), torch.zeros(2, 0), Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2)))
    (two,) = build_terms("mlkd", MethodContext(num_classes=3))
    batch = Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2), teacher_logits=torch.zeros(2, 3))
    with pytest.raises(MakdError, match="--mlkd-views 1"):
        two.loss(torch.zeros(2, 3), torch.zeros(2, 0), batch)


def _terms(spec, **options):
    return build_terms(spec, MethodContext(num_classes=3, epochs=10, options=options))


def test_reference_defaults():
    # LaViD's fine-grained runs (lavid/models/distill_models.py): KD T 1, CE 0.5, KD 0.5; DKD T 4, CE 1,
    # alpha 1, beta 2, warm-up 1; MLKD T 1 (then 3, 5, 2, 6), ALPHA 0.5, CE 0.5, two views, masks.
    (k,), (d,), (m,) = _terms("kd"), _terms("dkd"), _terms("mlkd")
    assert (k.temperature, k.weight, k.ce_weight) == (1.0, 0.5, 0.5)
    assert (d.temperature, d.weight, d.ce_weight, d.alpha, d.beta, d.warmup) == (4.0, 1.0, 1.0, 1.0, 2.0, 1)
    assert (m.temperatures, m.weight, m.ce_weight, m.views, m.masks) == ((1.0, 3.0, 5.0, 2.0, 6.0), 0.5, 0.5, 2, True)
    # logit standardisation changes neither temperatures nor weights (LaViD's MLKD+LS keeps T 1)
    (ls,) = _terms("kd", logit_standardize=True)
    (dls,) = _terms("dkd", logit_standardize=True)
    assert (ls.temperature, ls.weight, dls.temperature) == (1.0, 0.5, 4.0)
    # explicit values win (each the option's own key: --kd-temperature is kd_temperature everywhere)
    (set_,) = _terms("kd", kd_temperature=4.0, kd_weight=0.9, kd_ce_weight=0.1)
    assert (set_.temperature, set_.weight, set_.ce_weight) == (4.0, 0.9, 0.1)
    (mset,) = _terms("mlkd", kd_temperature=4.0, mlkd_views=1, mlkd_masks="none")
    assert (mset.temperatures, mset.views, mset.masks) == ((4.0, 3.0, 5.0, 2.0, 6.0), 1, False)
    with pytest.raises(MakdError, match="out of range"):
        _terms("mlkd", mlkd_views=3)


def test_kd_weights_and_the_ce_weight_of_a_combination():
    s, tt = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 2, 0, 1])
    batch = Batch(torch.zeros(5, 1), y, torch.arange(5), teacher_logits=tt)
    for opts, (T, w) in (({}, (1.0, 0.5)), ({"kd_weight": 0.9, "kd_temperature": 4.0}, (4.0, 0.9))):
        (k,) = _terms("kd", **opts)
        want = w * kl_rows(softmax(tt.numpy(), T), softmax(s.numpy(), T)).mean() * T * T
        assert k.loss(s, torch.zeros(5, 0), batch).item() == pytest.approx(want, rel=1e-10)
    # --aux-weight sets the weight too, unless --kd-weight is given (LaViD + MLKD: lavid 40, mlkd 0.5)
    (k,) = build_terms("kd", MethodContext(num_classes=3, weight=0.9))
    assert k.weight == 0.9
    (k,) = build_terms("kd", MethodContext(num_classes=3, weight=2.0, options={"kd_weight": 0.9}))
    assert k.weight == 0.9
    assert ce_weight_of([]) == 1.0 and ce_weight_of(_terms("kd")) == 0.5 and ce_weight_of(_terms("dkd")) == 1.0
    with pytest.raises(MakdError, match="--kd-ce-weight"):
        ce_weight_of(_terms("kd+dkd"))
    assert ce_weight_of(_terms("kd+dkd", kd_ce_weight=0.3)) == 0.3


def test_standardized_kd_and_dkd_terms_match_the_ls_code():
    # sunshangquan/logit-standardization-KD: kd_loss / dkd_loss z-score both inputs (ddof 1, + 1e-7) first.
    rng = np.random.default_rng(3)
    s, tt = rng.normal(size=(6, 4)) * 2, rng.normal(size=(6, 4)) * 5 + 1
    y = [0, 1, 2, 3, 0, 1]
    batch = Batch(torch.zeros(6, 1), torch.tensor(y), torch.arange(6), epoch=5, teacher_logits=t(tt))
    (k,) = _terms("kd", logit_standardize=True, kd_temperature=2.0, kd_weight=9.0)
    want = 9.0 * kl_rows(softmax(ls_numpy(tt), 2.0), softmax(ls_numpy(s), 2.0)).mean() * 4
    assert k.loss(t(s), torch.zeros(6, 0), batch).item() == pytest.approx(want, rel=1e-9)
    (d,) = _terms("dkd", logit_standardize=True)
    want = dkd_numpy(ls_numpy(s), ls_numpy(tt), y, 1.0, 2.0, 4.0)
    assert d.loss(t(s), torch.zeros(6, 0), batch).item() == pytest.approx(want, rel=1e-9)


def test_mlkd_term_is_the_reference_with_lavid_settings():
    rng = np.random.default_rng(4)
    sw, tw, ss, ts = (rng.normal(size=(8, 5)) * k for k in (1.0, 3.0, 1.0, 3.0))
    batch = Batch(torch.zeros(8, 1), torch.zeros(8, dtype=torch.long), torch.arange(8), teacher_logits=t(tw),
                  strong_logits=t(ss), strong_teacher_logits=t(ts))
    for ls in (False, True):
        (m,) = _terms("mlkd", logit_standardize=ls)
        want = mlkd_reference_numpy(sw, tw, ss, ts, 1.0, 0.5, ls)
        assert m.loss(t(sw), torch.zeros(8, 0), batch).item() == pytest.approx(want, rel=1e-9)
    # one view, no masks, weight 1, temperatures 2..6: makd's earlier simplified MLKD
    (old,) = _terms("mlkd", mlkd_views=1, mlkd_masks="none", kd_weight=1.0, kd_temperature=4.0)
    assert old.loss(t(sw), torch.zeros(8, 0), batch).item() == pytest.approx(mlkd_numpy(sw, tw, (2, 3, 4, 5, 6)), rel=1e-9)


def test_dkd_warmup():
    s, tt, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    full = dkd(s, tt, y).item()

    def at(term, epoch):
        return term.loss(s, torch.zeros(4, 0), Batch(torch.zeros(4, 1), y, torch.arange(4), epoch=epoch, teacher_logits=tt)).item()

    # LaViD: min(current_epoch / 1, 1) with Lightning's 0-based epoch: CE alone in the first epoch
    (lavid,) = _terms("dkd")
    assert (lavid.warmup, lavid.warmup_from) == (1, "lavid")
    assert at(lavid, 0) == 0.0 and at(lavid, 1) == pytest.approx(full, rel=1e-6)
    # mdistiller: min(epoch / 20, 1) with its 1-based epoch
    (md,) = _terms("dkd", dkd_warmup=20, dkd_warmup_from="mdistiller")
    assert [md.ramp(e) for e in (0, 9, 19, 100)] == pytest.approx([1 / 20, 10 / 20, 1.0, 1.0])
    assert at(md, 0) == pytest.approx(full / 20, rel=1e-5)
    (lavid20,) = _terms("dkd", dkd_warmup=20)
    assert [lavid20.ramp(e) for e in (0, 10, 20)] == pytest.approx([0.0, 0.5, 1.0])
    (none,) = _terms("dkd", dkd_warmup=0)
    assert at(none, 0) == pytest.approx(full, rel=1e-6)
    with pytest.raises(MakdError, match="out of range"):
        _terms("dkd", dkd_warmup_from="cifar")

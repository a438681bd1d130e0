"""Public loss functions: call them from your own training loop.

Conventions: BCE and MSE are means over all elements; KL-based losses use batch-mean reduction
(sum over classes, mean over samples). The distillation losses detach their teacher inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def makd_bce(aspect_logits: Tensor, targets: Tensor) -> Tensor:
    """MaKD aspect loss (makd.txt eq. 5): BCE-with-logits of the Q aspect outputs against p(yes)."""
    return F.binary_cross_entropy_with_logits(aspect_logits, targets.to(aspect_logits.dtype))


def makd_kl(aspect_logits: Tensor, targets: Tensor, eps: float = 1e-6) -> Tensor:
    """MaKD's ablation (makd.txt Table 3a): KL(target || student) between per-aspect Bernoulli distributions."""
    p = targets.to(aspect_logits.dtype).clamp(eps, 1 - eps)
    log_q1 = F.logsigmoid(aspect_logits)
    log_q0 = F.logsigmoid(-aspect_logits)
    kl = p * (p.log() - log_q1) + (1 - p) * ((1 - p).log() - log_q0)
    return kl.mean()


def lavid_mse(aux_logits: Tensor, targets: Tensor) -> Tensor:
    """LaViD loss: MSE between the auxiliary outputs (B x Q*M or B x Q x M) and the class targets T_y."""
    return F.mse_loss(aux_logits.reshape(targets.shape), targets.to(aux_logits.dtype))


# --- classic logit distillation (a visual teacher's class logits) -----------------------------------


def logit_standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Logit standardisation (Sun et al. 2024, "Logit Standardization in KD"): z-score each row.

    Returns ``(z - mean(z)) / (std(z) + eps)`` per sample with the unbiased standard deviation
    (``1/(C-1)`` inside the root) and ``eps = 1e-7``, as the public code computes it
    (``normalize`` in sunshangquan/logit-standardization-KD and in LaViD's ``mlkd.py``; the paper's
    text writes the population std). Apply it to both student and teacher logits before the temperature.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True, unbiased=True)
    return (logits - mean) / (std + eps)


def kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton KD: ``KL(softmax(t/T) || softmax(s/T)) * T^2``, summed over classes, mean over the batch."""
    T = float(temperature)
    log_q = F.log_softmax(student_logits / T, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / T, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * T * T


def _target_split(log_probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probabilities of the target class and of "any other class", from full log-softmax rows."""
    log_t = log_probs.gather(1, target[:, None]).squeeze(1)
    masked = log_probs.masked_fill(F.one_hot(target, log_probs.shape[1]).bool(), float("-inf"))
    return log_t, torch.logsumexp(masked, dim=1)


def dkd(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float = 1.0, beta: float = 2.0,
        temperature: float = 4.0) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): ``alpha * TCKD + beta * NCKD``, each times ``T^2``, batch mean.

    * TCKD: KL between the binary distributions (p_target, 1 - p_target) of teacher and student,
      where ``p = softmax(z / T)``.
    * NCKD: KL between the teacher's and the student's distributions over the non-target classes only,
      i.e. softmax of ``z / T`` with the target logit pushed to a large negative number (-1000).

    No warm-up here: the ``dkd`` method scales this loss by ``min((epoch + 1) / warmup, 1)``.
    """
    T = float(temperature)
    s = student_logits / T
    t = teacher_logits.detach().to(student_logits.dtype) / T
    labels = labels.long()
    # TCKD, in log space: log p_target and log(1 - p_target) = logsumexp of the non-target log-probs.
    ls_t, ls_o = _target_split(F.log_softmax(s, dim=1), labels)
    lt_t, lt_o = _target_split(F.log_softmax(t, dim=1), labels)
    tckd = (lt_t.exp() * (lt_t - ls_t) + lt_o.exp() * (lt_o - ls_o)).mean()
    # NCKD: the target logit masked out of both softmaxes.
    mask = F.one_hot(labels, s.shape[1]).to(s.dtype) * 1000.0
    log_q = F.log_softmax(s - mask, dim=1)
    log_p = F.log_softmax(t - mask, dim=1)
    nckd = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return (alpha * tckd + beta * nckd) * T * T


# MLKD's temperatures after the base one, in the reference's order (mdistiller's MLKD.py, LaViD's mlkd.py).
MLKD_FIXED_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def mlkd_temperatures(base: float) -> tuple[float, ...]:
    """The five temperatures of the reference MLKD: the configured one, then 3, 5, 2, 6."""
    return (float(base), *MLKD_FIXED_TEMPERATURES)


def mlkd_masks(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """MLKD's median-confidence masks from the teacher's logits (of the weak view), as in the reference:

    * per sample: the teacher's top probability ``max softmax(z)`` is at most its batch median;
    * per class: the class's summed probability over the batch is at most the median over classes.

    The median is the 50th percentile with linear interpolation (``np.percentile(x, 50)``).
    """
    p = F.softmax(teacher_logits.detach().float(), dim=1)
    confidence = p.max(dim=1).values
    class_confidence = p.sum(dim=0)
    return confidence <= torch.quantile(confidence, 0.5), class_confidence <= torch.quantile(class_confidence, 0.5)


def _batch_gram_loss(s: Tensor, t: Tensor, T: float) -> Tensor:
    """MLKD batch level: ``||P_t P_t^T - P_s P_s^T||_F^2 / B`` with ``P = softmax(z / T)`` (B x B Gram matrices)."""
    ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0]


def _class_gram_loss(s: Tensor, t: Tensor, T: float) -> Tensor:
    """MLKD class level: ``||P_t^T P_t - P_s^T P_s||_F^2 / C`` (C x C class-correlation Gram matrices)."""
    ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1]


def mlkd(student_logits: Tensor, teacher_logits: Tensor, temperatures=(2.0, 3.0, 4.0, 5.0, 6.0), *,
         strong_student: Tensor | None = None, strong_teacher: Tensor | None = None, masks: bool = False,
         standardize: bool = False, weight: float = 1.0) -> Tensor:
    """Multi-level logit distillation (Jin et al. 2023) as the public code runs it (mdistiller-based
    ``MLKD.forward_train`` in LaViD and in the LS code); ``student_logits``/``teacher_logits`` are the
    weak view. With ``w = weight`` and the sums over ``temperatures``:

    * weak view: ``w * m_s * sum KD(T)`` (instance), ``w * m_c * sum CC(T)`` (class level),
      ``w * m_s * sum BC(T)`` (batch level);
    * strong view (when given): ``w * sum KD(T)`` over the first three temperatures on the strong
      view plus ``w * sum KD(T)`` over the remaining ones on the *weak* view, unmasked (the reference
      code computes those two on the weak logits; its strong-view batch and class terms are never
      added to the loss, so they are not computed here).

    ``KD(T)`` is :func:`kd` (batch mean, times ``T^2``) on z-scored logits when ``standardize``
    (:func:`logit_standardize`, instance terms only, as the references); CC/BC never standardise.
    ``m_s``, ``m_c`` are the fractions of samples / classes that :func:`mlkd_masks` keeps: the
    reference multiplies each batch-mean loss by the boolean mask and averages, i.e. scales it by
    the kept fraction (about 1/2). Without ``masks`` they are 1, and one view with ``masks=False`` and
    ``weight=1`` is makd's earlier simplified MLKD. CE is not included.
    """
    temps = [float(T) for T in temperatures]
    t_weak = teacher_logits.detach().to(student_logits.dtype)
    m_s = m_c = 1.0
    if masks:
        sample_mask, class_mask = mlkd_masks(t_weak)
        m_s, m_c = sample_mask.to(student_logits.dtype).mean(), class_mask.to(student_logits.dtype).mean()
    inst_s, inst_t = (logit_standardize(student_logits), logit_standardize(t_weak)) if standardize else (student_logits, t_weak)
    total = student_logits.new_zeros(())
    for T in temps:
        total = total + m_s * kd(inst_s, inst_t, T)
        total = total + m_c * _class_gram_loss(student_logits, t_weak, T)
        total = total + m_s * _batch_gram_loss(student_logits, t_weak, T)
    if strong_student is not None:
        if strong_teacher is None:
            raise ValueError("mlkd: strong_student needs strong_teacher")
        ss, ts = strong_student, strong_teacher.detach().to(strong_student.dtype)
        if standardize:
            ss, ts = logit_standardize(ss), logit_standardize(ts)
        for i, T in enumerate(temps):
            total = total + (kd(ss, ts, T) if i < 3 else kd(inst_s, inst_t, T))
    return weight * total


# --- LEAD (lead-supplementary.txt): entropy-weighted distillation from a CLIP teacher ---------------


def normalized_entropy(probs: Tensor) -> Tensor:
    """``H(p) / log(C)`` per row, in [0, 1] (0: one-hot, 1: uniform); zero probabilities are fine."""
    C = probs.shape[-1]
    h = -torch.special.xlogy(probs, probs).sum(dim=-1)
    if C < 2:
        return torch.zeros_like(h)
    return (h / math.log(C)).clamp(0.0, 1.0)


def lead_weighted_kl(student_logits: Tensor, teacher_probs: Tensor, entropy: Tensor) -> Tensor:
    """LEAD distillation: mean over the batch of ``(1 - H^2) * KL(teacher || student)`` per sample.

    ``teacher_probs`` are the CLIP teacher's class probabilities (B x C), ``entropy`` its normalised
    entropy per sample (B, from :func:`normalized_entropy`); the student side is ``softmax(student_logits)``.
    """
    p = teacher_probs.detach().to(student_logits.dtype)
    log_q = F.log_softmax(student_logits, dim=-1)
    kl = (torch.special.xlogy(p, p) - p * log_q).sum(dim=-1)
    w = 1.0 - entropy.detach().to(kl.dtype) ** 2
    return (w * kl).mean()

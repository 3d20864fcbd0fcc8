"""Knowledge-distillation and adversarial divergence terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            tau: float = 1.0, reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(t/tau) || softmax(s/tau)) * tau^2, averaged over the batch (`batchmean`) or
    over every logit (`mean`: the batch mean divided by the number of classes, as ZSKT's code
    computes it)."""
    if reduction not in ("batchmean", "mean"):
        raise ValueError(f"KD reduction must be batchmean or mean, got {reduction!r}")
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau * tau
    return kl / student_logits.shape[1] if reduction == "mean" else kl


def per_sample_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(t) || softmax(s)) for each sample, shape (N,)."""
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_t = F.log_softmax(teacher_logits.float(), dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1)


def adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """-mean[1{argmax S == argmax T} * KL(T || S)]: rewards images the student gets wrong."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return -(per_sample_kl(student_logits, teacher_logits) * agree).mean()

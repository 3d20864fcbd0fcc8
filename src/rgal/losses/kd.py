"""Knowledge-distillation and adversarial divergence terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            tau: float = 1.0) -> torch.Tensor:
    """KL(softmax(t/tau) || softmax(s/tau)) * tau^2, averaged over the batch."""
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau * tau


def per_sample_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(t) || softmax(s)) for each sample, shape (N,)."""
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_t = F.log_softmax(teacher_logits.float(), dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1)


def adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """-mean[1{argmax S == argmax T} * KL(T || S)]: rewards images the student gets wrong."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return -(per_sample_kl(student_logits, teacher_logits) * agree).mean()

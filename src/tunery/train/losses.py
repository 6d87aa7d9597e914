"""Preference losses on sequence log-probabilities, as LLaMA-Factory computes them (DPO and its variants from TRL's
formulas, ORPO and SimPO without a reference model, KTO). Pure functions of tensors: easy to read and to test."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunery.data.records import IGNORE_INDEX

REFERENCE_FREE = ("orpo", "simpo")
AVERAGED = ("ipo", "orpo", "simpo")  # losses on the per-token average log-probability instead of the sum


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the log-probabilities of the labelled tokens of each sequence, and their number."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :].float()
    mask = labels != IGNORE_INDEX
    labels[~mask] = 0
    token_logps = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             loss_type: str, beta: float, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor,
                                                                                torch.Tensor]:
    """Per-example losses and the implicit rewards beta·(logp − ref_logp) of chosen and rejected answers.

    sigmoid: −log σ(β·Δ) (DPO, with conservative label smoothing); hinge: max(0, 1 − β·Δ) (SLiC);
    ipo: (Δ − 1/(2β))²; kto_pair: the paired KTO loss against the batch's clamped KL estimates.
    """
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == "kto_pair":
        chosen_kl = (chosen - ref_chosen).mean().clamp(min=0)
        rejected_kl = (rejected - ref_rejected).mean().clamp(min=0)
        losses = torch.cat((1 - torch.sigmoid(beta * ((chosen - ref_chosen) - rejected_kl)),
                            1 - torch.sigmoid(beta * (chosen_kl - (rejected - ref_rejected)))), 0)
    else:
        raise ValueError(f"unknown DPO loss {loss_type}")
    return losses, beta * (chosen - ref_chosen).detach(), beta * (rejected - ref_rejected).detach()


def orpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """ORPO on average log-probabilities: SFT loss on the chosen answer + β·(−log σ(log-odds ratio)).
    Returns (losses, sft_loss, odds_ratio_loss)."""
    log_odds = (chosen - rejected) - (torch.log1p(-torch.exp(chosen)) - torch.log1p(-torch.exp(rejected)))
    odds_ratio = -F.logsigmoid(log_odds)
    sft = -chosen
    return sft + beta * odds_ratio, sft, odds_ratio


def simpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimPO on average log-probabilities: −log σ(β·(chosen − rejected) − γ)."""
    return -F.logsigmoid(beta * (chosen - rejected - gamma / beta))


def kto_loss(logps: torch.Tensor, ref_logps: torch.Tensor, kl: torch.Tensor, desirable: torch.Tensor, beta: float,
             chosen_weight: float, rejected_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO (Ethayarajh et al. 2024): desirable answers pay 1 − σ(β·(logratio − KL)), undesirable ones
    1 − σ(β·(KL − logratio)), each weighted. ``kl`` is the clamped, detached reference point.
    Returns the per-example losses and rewards β·logratio."""
    logratios = logps - ref_logps
    losses = torch.where(desirable, chosen_weight * (1 - torch.sigmoid(beta * (logratios - kl))),
                         rejected_weight * (1 - torch.sigmoid(beta * (kl - logratios))))
    return losses, beta * logratios.detach()

"""The preference losses Tunery computes itself, as LLaMA-Factory does: kto_pair, orpo and simpo. TRL 1.x's
DPOTrainer has none of them (ORPO and CPO/SimPO live in trl.experimental, on trainers that tokenize text themselves);
sigmoid, hinge, ipo, the other DPO losses and KTO run on TRL's trainers (dpo.py, kto.py). Pure tensor functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunery.data.records import IGNORE_INDEX

OWN_PREF_LOSSES = ("kto_pair", "orpo", "simpo")
AVERAGED = ("orpo", "simpo")  # losses on the per-token average log-probability instead of the sum


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the log-probabilities of the labelled tokens of each sequence, and their number."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :].float()
    mask = labels != IGNORE_INDEX
    labels[~mask] = 0
    token_logps = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def kto_pair_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                  ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """The paired KTO loss of TRL 0.8 (LLaMA-Factory's kto_pair) against the batch's clamped KL estimates."""
    chosen_kl = (chosen - ref_chosen).mean().clamp(min=0)
    rejected_kl = (rejected - ref_rejected).mean().clamp(min=0)
    return torch.cat((1 - torch.sigmoid(beta * ((chosen - ref_chosen) - rejected_kl)),
                      1 - torch.sigmoid(beta * (chosen_kl - (rejected - ref_rejected)))), 0)


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

"""The arithmetic of PPO for language models (as TRL's classic PPOTrainer that LLaMA-Factory used): per-token KL
penalty, reward on the last answer token, generalised advantage estimation, clipped policy and value losses, and
the adaptive KL coefficient. Pure tensor functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

GAMMA = 1.0
LAM = 0.95
CLIP_RANGE = 0.2
CLIP_RANGE_VALUE = 0.2
VF_COEF = 0.1
INIT_KL_COEF = 0.2
KL_HORIZON = 10000


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def token_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """−kl_coef·(logp − ref_logp) on every answer token, plus the score on the last one. Returns (rewards, kl)."""
    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1) - 1).clamp(min=0).long()
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def advantages_and_returns(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                           whiten_rewards: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) over the answer tokens; advantages are whitened, returns = advantages + values (before)."""
    values = values * mask
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False) * mask
    last_gae = torch.zeros(rewards.shape[0], device=rewards.device)
    reversed_adv = []
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t < length - 1 else torch.zeros_like(last_gae)
        delta = rewards[:, t] + GAMMA * next_value - values[:, t]
        last_gae = delta + GAMMA * LAM * last_gae
        reversed_adv.append(last_gae)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    returns = advantages + values
    return masked_whiten(advantages, mask) * mask, returns


def ppo_losses(logps: torch.Tensor, old_logps: torch.Tensor, values: torch.Tensor, old_values: torch.Tensor,
               advantages: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate policy loss + VF_COEF × clipped value loss, and their parts for logging."""
    ratio = torch.exp(logps - old_logps)
    pg = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - CLIP_RANGE, 1 + CLIP_RANGE))
    pg_loss = masked_mean(pg, mask)
    clipped = old_values + (values - old_values).clamp(-CLIP_RANGE_VALUE, CLIP_RANGE_VALUE)
    vf_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)
    loss = pg_loss + VF_COEF * vf_loss
    return loss, {"policy_loss": pg_loss.detach(), "value_loss": vf_loss.detach()}


@dataclass
class AdaptiveKL:
    """Ziegler et al.'s controller: nudges the KL coefficient so that the KL tracks ``target``."""

    value: float = INIT_KL_COEF
    target: float = 6.0
    horizon: int = KL_HORIZON

    def update(self, current_kl: float, n_steps: int) -> None:
        error = max(min(current_kl / self.target - 1, 0.2), -0.2)
        self.value *= 1 + error * n_steps / self.horizon


@dataclass
class RunningMoments:
    """Running mean and standard deviation of the scores (ppo_score_norm)."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 1e-24

    def update(self, scores: torch.Tensor) -> None:
        batch_mean, batch_var, n = scores.mean().item(), scores.var(unbiased=False).item(), scores.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.mean) / (self.var ** 0.5 + 1e-8)

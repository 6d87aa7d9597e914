"""LLaMA-Factory's alternative SFT losses, as pure functions of the logits and labels (next-token shift inside):

- DFT (dynamic fine-tuning): each answer token's cross-entropy times its detached probability.
- EAFT (entropy-adaptive): each token's cross-entropy times (entropy of its top-20 distribution / 3) ** alpha.
- ASFT (anchored): the DFT loss plus alpha × the token KL divergence KL(reference ‖ policy).

The sum is divided by ``num_items_in_batch`` when transformers gives it (the answer tokens of the whole accumulated
batch, so gradient accumulation matches a larger batch), else it is the token mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunery.data.records import IGNORE_INDEX


def _shifted(logits: torch.Tensor, labels: torch.Tensor):
    vocab = logits.size(-1)
    return logits[..., :-1, :].float().reshape(-1, vocab), labels[..., 1:].reshape(-1).to(logits.device)


def _reduce(weighted: torch.Tensor, num_items_in_batch) -> torch.Tensor:
    if num_items_in_batch is None:
        return weighted.mean()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(weighted.device)
    return weighted.sum() / num_items_in_batch


def dft_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    source, target = _shifted(logits, labels)
    mask = target != IGNORE_INDEX
    if not mask.any():
        return logits.sum() * 0.0
    losses = F.cross_entropy(source[mask], target[mask], reduction="none")
    return _reduce(losses * torch.exp(-losses).detach(), num_items_in_batch)


def eaft_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None, alpha: float = 1.0,
              top_k: int = 20) -> torch.Tensor:
    source, target = _shifted(logits, labels)
    mask = target != IGNORE_INDEX
    if not mask.any():
        return logits.sum() * 0.0
    source = source[mask]
    losses = F.cross_entropy(source, target[mask], reduction="none")
    with torch.no_grad():
        top = torch.topk(source, k=min(top_k, source.size(-1)), dim=-1).values
        logp = top - torch.logsumexp(top, dim=-1, keepdim=True)
        entropy = -(logp.exp() * logp).sum(-1)
        weight = torch.pow(entropy / 3.0, alpha)
    return _reduce(losses * weight, num_items_in_batch)


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of KL(ref ‖ policy) of the next-token distributions."""
    policy, target = _shifted(policy_logits, labels)
    ref, _ = _shifted(ref_logits, labels)
    mask = (target != IGNORE_INDEX).float()
    kl = F.kl_div(policy.log_softmax(-1), ref.softmax(-1), reduction="none").sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def asft_loss(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor, alpha: float = 0.1,
              num_items_in_batch=None) -> torch.Tensor:
    return dft_loss(logits, labels, num_items_in_batch) + alpha * token_kl(logits, ref_logits, labels)


class SftLossMixin:
    """Mixed into the sft Trainer: replaces the cross-entropy by the loss the options ask for (none: unchanged)."""

    def setup_sft_loss(self, ref_model=None) -> None:
        cfg = self.cfg
        self.ref_model = None
        if cfg.use_dft_loss:
            self.compute_loss_func = lambda outputs, labels, num_items_in_batch=None: dft_loss(
                outputs["logits"], labels, num_items_in_batch)
        elif cfg.use_eaft_loss:
            self.compute_loss_func = lambda outputs, labels, num_items_in_batch=None: eaft_loss(
                outputs["logits"], labels, num_items_in_batch, cfg.eaft_alpha)
        elif cfg.use_asft_loss and ref_model is not None:
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.cfg.use_asft_loss:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs["labels"]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.no_grad():
            if self.ref_model is not None:
                ref_logits = self.ref_model(**forward).logits
            else:  # LoRA/OFT: the policy with its adapter switched off is the reference
                unwrapped = self.accelerator.unwrap_model(model)
                with unwrapped.disable_adapter():
                    ref_logits = unwrapped(**forward).logits
        outputs = model(**forward)
        loss = asft_loss(outputs.logits, labels, ref_logits, self.cfg.asft_alpha, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

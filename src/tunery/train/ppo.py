"""Proximal policy optimisation (RLHF) on prompts, one process, readable top to bottom.

Each step: sample a batch of prompts → the policy answers → the reward model (or API) scores prompt + answer →
per-token rewards = score on the last token − kl_coef·KL(policy ‖ reference) → GAE advantages → ``ppo_epochs``
passes of clipped policy/value updates in mini-batches. The value head is a linear layer on the policy's last hidden
state (saved as value_head.safetensors). The reference is the policy with its LoRA adapter off (or a frozen copy).
Checkpoints, resume, Ctrl-C, trainer_log.jsonl and plots work as for the other stages.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from tunery.errors import TuneryError
from tunery.train.ppo_core import (
    AdaptiveKL,
    RunningMoments,
    advantages_and_returns,
    ppo_losses,
    token_rewards,
)
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"


class PpoRunner:
    def __init__(self, cfg: Config, args, tokenizer, template, policy, value_head, ref, scorer,
                 prompts: list[list[int]]):
        from transformers import TrainerControl, TrainerState, get_scheduler

        from tunery.train.callbacks import InterruptCallback, LogCallback
        from tunery.train.predict import generation_kwargs

        self.cfg, self.args, self.tokenizer, self.template = cfg, args, tokenizer, template
        self.policy, self.value_head, self.ref, self.scorer, self.prompts = policy, value_head, ref, scorer, prompts
        self.device = args.device
        self.mini_batch = args.per_device_train_batch_size
        self.rollout = self.mini_batch * args.gradient_accumulation_steps * cfg.ppo_buffer_size
        self.total = args.max_steps if args.max_steps > 0 else \
            math.ceil(args.num_train_epochs * len(prompts) / self.rollout)
        self.params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                           betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        self.scheduler = get_scheduler(args.lr_scheduler_type, self.optimizer,
                                       num_warmup_steps=args.get_warmup_steps(self.total),
                                       num_training_steps=self.total)
        self.kl = AdaptiveKL(target=cfg.ppo_target)
        self.moments = RunningMoments()
        self.state = TrainerState(max_steps=self.total, logging_steps=args.logging_steps, save_steps=args.save_steps,
                                  train_batch_size=self.rollout)
        self.control = TrainerControl()
        self.log_callback = LogCallback(cfg.output_dir)
        self.interrupt = InterruptCallback()
        self.gen_kwargs = generation_kwargs(cfg, template, tokenizer)
        self.stop_ids = set(self.gen_kwargs["eos_token_id"])
        self._perms: dict[int, list[int]] = {}

    # -- data ------------------------------------------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            n = len(self.prompts)
            gen = torch.Generator().manual_seed(self.args.seed + epoch)
            order = range(n) if self.cfg.disable_shuffling else torch.randperm(n, generator=gen).tolist()
            self._perms[epoch] = list(order)
        return self._perms[epoch]

    def batch_indices(self, step: int) -> list[int]:
        """The prompts of a step, from a seeded permutation per epoch: the same for a run and its resumption."""
        n = len(self.prompts)
        return [self._order(pos // n)[pos % n] for pos in range(step * self.rollout, (step + 1) * self.rollout)]

    # -- rollout ---------------------------------------------------------------------------------------------------
    def answer(self, queries: list[list[int]]) -> list[list[int]]:
        from tunery.train.predict import generate

        out = []
        for tokens in generate(self.policy, self.tokenizer, queries, self.mini_batch, self.gen_kwargs):
            stop = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
            tokens = tokens[:stop + 1] if stop is not None else tokens
            out.append(tokens or [self.tokenizer.eos_token_id])
        return out

    def tensors(self, queries, responses) -> dict[str, torch.Tensor]:
        from tunery.train.collators import pad

        seqs = [q + r for q, r in zip(queries, responses)]
        return {"input_ids": pad(seqs, self.tokenizer.pad_token_id).to(self.device),
                "attention_mask": pad([[1] * len(s) for s in seqs], 0).to(self.device),
                "query_len": torch.tensor([len(q) for q in queries], device=self.device),
                "response_len": torch.tensor([len(r) for r in responses], device=self.device)}

    def forward(self, model, batch, with_values: bool):
        """Log-probabilities (and values) of the answer tokens, aligned from each answer's first token."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=with_values, use_cache=False)
        logits = out.logits[:, :-1].float()
        logps = torch.gather(logits.log_softmax(-1), 2, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        width = int(batch["response_len"].max())
        steps = torch.arange(width, device=logps.device)
        pos = (batch["query_len"][:, None] - 1 + steps[None]).clamp(max=logps.shape[1] - 1)
        mask = (steps[None] < batch["response_len"][:, None]).float()
        values = None
        if with_values:
            hidden = out.hidden_states[-1][:, :-1].float()
            values = self.value_head(hidden).squeeze(-1).gather(1, pos)
        return logps.gather(1, pos), values, mask

    def reference_logps(self, batch):
        if self.ref is not None:
            return self.forward(self.ref, batch, False)[0]
        with self.policy.disable_adapter():
            return self.forward(self.policy, batch, False)[0]

    def _chunks(self, batch, rows=None):
        rows = torch.arange(len(batch["input_ids"])) if rows is None else rows
        for start in range(0, len(rows), self.mini_batch):
            picked = rows[start:start + self.mini_batch]
            yield picked, {k: v[picked] for k, v in batch.items()}

    def step(self, step: int) -> dict[str, float]:
        queries = [self.prompts[i] for i in self.batch_indices(step)]
        self.policy.eval()
        responses = self.answer(queries)
        batch = self.tensors(queries, responses)
        texts = self.tokenizer.batch_decode([q + r for q, r in zip(queries, responses)], skip_special_tokens=False)
        raw_scores = self.scorer([q + r for q, r in zip(queries, responses)], texts).to(self.device).float()
        scores = raw_scores
        if self.cfg.ppo_score_norm:
            self.moments.update(raw_scores)
            scores = self.moments.normalise(raw_scores)
        with torch.no_grad():
            parts = [(self.forward(self.policy, sub, True), self.reference_logps(sub))
                     for _, sub in self._chunks(batch)]
        old_logps = torch.cat([p[0][0] for p in parts])
        old_values = torch.cat([p[0][1] for p in parts])
        mask = torch.cat([p[0][2] for p in parts])
        ref_logps = torch.cat([p[1] for p in parts])
        rewards, kl = token_rewards(scores, old_logps, ref_logps, mask, self.kl.value)
        advantages, returns = advantages_and_returns(rewards, old_values, mask, self.cfg.ppo_whiten_rewards)

        self.policy.train()
        accumulate = self.args.gradient_accumulation_steps
        losses, logged = [], {"policy_loss": [], "value_loss": []}
        for _ in range(self.cfg.ppo_epochs):
            chunks = list(self._chunks(batch, torch.randperm(len(queries))))
            for k, (rows, sub) in enumerate(chunks):
                logps, values, _ = self.forward(self.policy, sub, True)
                loss, info = ppo_losses(logps, old_logps[rows], values, old_values[rows], advantages[rows],
                                        returns[rows], mask[rows])
                (loss / accumulate).backward()
                losses.append(loss.item())
                for key, value in info.items():
                    logged[key].append(value.item())
                if (k + 1) % accumulate == 0 or k == len(chunks) - 1:
                    if self.args.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(self.params, self.args.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        mean_kl = kl.sum(1).mean().item()
        self.kl.update(mean_kl, len(queries))
        self.state.num_input_tokens_seen += int(batch["attention_mask"].sum())
        return {"loss": float(np.mean(losses)), "reward": raw_scores.mean().item(), "kl": mean_kl,
                "kl_coef": self.kl.value, "policy_loss": float(np.mean(logged["policy_loss"])),
                "value_loss": float(np.mean(logged["value_loss"])),
                "response_length": batch["response_len"].float().mean().item()}

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def save_weights(self, path: str) -> None:
        from safetensors.torch import save_file

        self.policy.save_pretrained(path)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()},
                  os.path.join(path, VALUE_HEAD_FILE))

    def save_checkpoint(self) -> str:
        from tunery.train.checkpoints import list_checkpoints

        path = os.path.join(self.cfg.output_dir, f"checkpoint-{self.state.global_step}")
        os.makedirs(path, exist_ok=True)
        self.save_weights(path)
        torch.save(self.optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
        torch.save(self.scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
        torch.save({"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()},
                   os.path.join(path, "rng_state.pth"))
        with open(os.path.join(path, "ppo_state.json"), "w", encoding="utf-8") as fh:
            json.dump({"kl_coef": self.kl.value, "moments": vars(self.moments)}, fh)
        self.state.save_to_json(os.path.join(path, "trainer_state.json"))  # last: marks the checkpoint complete
        limit = self.args.save_total_limit
        if limit:
            for old in list_checkpoints(self.cfg.output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def load_checkpoint(self, path: str) -> None:
        from safetensors.torch import load_file
        from transformers import TrainerState

        from tunery.utils.safe_load import safe_load

        if self.cfg.finetuning_type == "lora":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.policy, load_file(os.path.join(path, "adapter_model.safetensors")))
        else:
            self.policy.load_state_dict(load_file(os.path.join(path, "model.safetensors")), strict=False)
        self.value_head.load_state_dict(load_file(os.path.join(path, VALUE_HEAD_FILE)))
        self.optimizer.load_state_dict(safe_load(os.path.join(path, "optimizer.pt")))
        self.scheduler.load_state_dict(safe_load(os.path.join(path, "scheduler.pt")))
        rng = safe_load(os.path.join(path, "rng_state.pth"))
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        with open(os.path.join(path, "ppo_state.json"), encoding="utf-8") as fh:
            saved = json.load(fh)
        self.kl.value = saved["kl_coef"]
        self.moments = RunningMoments(**saved["moments"])
        state = TrainerState.load_from_json(os.path.join(path, "trainer_state.json"))
        self.state.global_step, self.state.log_history = state.global_step, state.log_history
        self.state.num_input_tokens_seen = state.num_input_tokens_seen
        logger.info("resumed from %s", path)

    # -- the loop --------------------------------------------------------------------------------------------------
    def _should_save(self) -> bool:
        strategy = str(getattr(self.args.save_strategy, "value", self.args.save_strategy))
        return strategy == "steps" and self.state.global_step % int(self.args.save_steps) == 0

    def train(self, resume: str | None) -> dict[str, float]:
        from tunery.train.workflow import interrupted

        if resume:
            self.load_checkpoint(resume)
        args, state = self.args, self.state
        self.log_callback.on_train_begin(args, state, self.control)
        self.interrupt.on_train_begin(args, state, self.control)
        started, first, losses = time.time(), state.global_step, []
        try:
            for step in range(state.global_step, self.total):
                stats = self.step(step)
                losses.append(stats["loss"])
                state.global_step = step + 1
                state.epoch = state.global_step * self.rollout / len(self.prompts)
                if state.global_step % max(int(args.logging_steps), 1) == 0 or state.global_step == self.total:
                    logs = {**{k: round(v, 6) for k, v in stats.items()},
                            "learning_rate": self.scheduler.get_last_lr()[0], "epoch": round(state.epoch, 4)}
                    state.log_history.append({**logs, "step": state.global_step})
                    self.log_callback.on_log(args, state, self.control, logs=logs)
                    logger.info("step %d/%d: %s", state.global_step, self.total,
                                ", ".join(f"{k} {v:.4g}" for k, v in logs.items()))
                if self.interrupt.requested:
                    path = self.save_checkpoint()
                    raise interrupted(self.interrupt, state.global_step, path)
                if self._should_save():
                    self.save_checkpoint()
        finally:
            self.interrupt.restore()
        runtime = time.time() - started
        done = state.global_step - first
        return {"epoch": round(state.epoch or 0.0, 4), "train_loss": float(np.mean(losses)) if losses else 0.0,
                "train_runtime": round(runtime, 4),
                "train_samples_per_second": round(done * self.rollout / max(runtime, 1e-9), 3),
                "train_steps_per_second": round(done / max(runtime, 1e-9), 3)}


def run_ppo(cfg: Config) -> None:
    from transformers import set_seed

    from tunery.data.dataset import prepare_datasets
    from tunery.data.template_select import sync_chat_template
    from tunery.model.session import open_session
    from tunery.train.artifacts import disk_full_is_one_line, prepare_output_dir, training_arguments
    from tunery.train.checkpoints import check_fits_model
    from tunery.train.models import load_reference_model
    from tunery.train.plots import plot_all
    from tunery.train.rewards import load_scorer

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TuneryError("stage ppo runs in one process — unset NPROC_PER_NODE/FORCE_TORCHRUN (or pick one device "
                          "with CUDA_VISIBLE_DEVICES=0)")
    if not cfg.do_train:
        raise TuneryError("stage ppo only trains — set do_train: true (evaluate the result with stage sft and "
                          "do_predict)")
    session = open_session(cfg, "train")
    tokenizer, template = session.tokenizer, session.template
    prompts = prepare_datasets(cfg, tokenizer, template).train["input_ids"]  # a lazy column of the mapped Dataset
    args = training_arguments(cfg)
    resume = prepare_output_dir(cfg)
    from tunery.runs import card

    card.begin(cfg, resume)

    set_seed(cfg.seed)
    policy = session.load_model(trainable=True)
    if resume:
        check_fits_model(resume, policy)
    value_head = torch.nn.Linear(policy.config.hidden_size, 1)
    if cfg.quantization_bit is None:
        policy.to(args.device)
    value_head.to(args.device)
    ref = load_reference_model(cfg, tokenizer)
    if ref is not None:
        ref.to(args.device)
    scorer = load_scorer(cfg, tokenizer, args.device)

    runner = PpoRunner(cfg, args, tokenizer, template, policy, value_head, ref, scorer, prompts)
    out = cfg.output_dir
    with disk_full_is_one_line(out):
        metrics = runner.train(resume)
        runner.save_weights(out)
        sync_chat_template(tokenizer, template)
        tokenizer.save_pretrained(out)
        for name in ("train_results.json", "all_results.json"):
            with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
                json.dump(metrics, fh, indent=2)
        runner.state.save_to_json(os.path.join(out, "trainer_state.json"))
    logger.info("train metrics: %s", metrics)
    if cfg.plot_loss:
        for path in plot_all(out):
            logger.info("saved %s", path)

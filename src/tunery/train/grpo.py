"""Group relative policy optimisation (``stage: grpo``) on TRL's GRPOTrainer, the Tunery way.

Prompts come from any registered dataset through Tunery's templates (the prompt-only encoding ppo uses: alpaca's
instruction + input, a conversation up to its last assistant turn, with system and tools); the record's other
columns (a reference answer, a label, test cases, and ``reference`` = its response) reach the reward functions as
keyword arguments, as TRL passes dataset columns. Each step the policy samples ``num_generations`` completions per
prompt, the rewards (``reward_funcs``, weighted by ``reward_weights``) are compared within each group, and TRL's loss
(``loss_type``) pushes the better completions up. LoRA, freeze and full work as for the other stages; checkpoints,
resume after a crash, Ctrl-C, trainer_log.jsonl (reward, per-function rewards, reward std, completion lengths, KL,
clip ratios) and plots as well; ``completions.jsonl`` holds the sampled completions with their rewards, one line
per completion, at every logging step.

What Tunery adds to TRL's trainer is small: the prompts are passed as Tunery's token ids (TRL would re-tokenize their
text and could add a second BOS), a record's columns are kept as Python values (not Arrow columns), and the samples
of each logging step are written to ``completions.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from tunery.config.grpo_options import SAMPLING_DEFAULTS
from tunery.errors import ConfigError, DataError, TuneryError
from tunery.train.plots import COMPLETIONS_FILE
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

ROW = "tunery_row"  # the dataset's only column besides the prompt: the index of the record's columns
# Arguments TRL passes to every reward function: a dataset column of the same name cannot be passed as well.
RESERVED = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments",
            "completion", ROW)
# What is worth a PNG after a run (TRL logs many more metrics; trainer_log.jsonl keeps them all).
PLOTTED = ("loss", "reward", "reward_std", "completions/mean_length", "kl", "clip_ratio/region_mean", "entropy")


# ------------------------------------------------------------------ prompts
@dataclasses.dataclass
class PromptSet:
    """The rows GRPOTrainer iterates (``prompt`` text + a row index), each row's columns for the reward functions, and
    the token ids of every prompt text."""

    rows: list[dict]
    columns: list[dict]
    prompt_ids: dict[str, list[int]]

    def dataset(self):
        from datasets import Dataset

        return Dataset.from_dict({"prompt": [r["prompt"] for r in self.rows], ROW: [r[ROW] for r in self.rows]})


def prompt_set(records, template, tokenizer, cutoff_len: int, ids: dict[str, list[int]] | None = None) -> PromptSet:
    """Encode each record's prompt as ppo does; keep its passthrough columns (and its response as ``reference``)."""
    from tunery.data.encode import encode_unsupervised

    ids = {} if ids is None else ids
    rows, columns, dropped = [], [], 0
    for record in records:
        try:
            example = encode_unsupervised(record, template, tokenizer, cutoff_len)
        except DataError:
            dropped += 1
            continue
        if not example["input_ids"]:
            dropped += 1
            continue
        text = tokenizer.decode(example["input_ids"], skip_special_tokens=False)
        ids.setdefault(text, example["input_ids"])
        own = {k: v for k, v in record.extra.get("columns", {}).items() if k != "prompt"}
        clash = next((k for k in own if k in RESERVED), None)
        if clash:
            raise DataError(f"{record.source}: column '{clash}' has the name of an argument the trainer passes to "
                            "every reward function — rename the column in the data (or map it away in "
                            "dataset_info.json)")
        if record.response and "reference" not in own:
            own["reference"] = record.response[0]["content"]
        rows.append({"prompt": text, ROW: len(columns)})
        columns.append(own)
    if dropped:
        logger.warning("dropped %d record(s) whose prompt could not be encoded", dropped)
    keys = list(dict.fromkeys(k for c in columns for k in c))  # every row gets every column (None where missing)
    columns = [{k: c.get(k) for k in keys} for c in columns]
    return PromptSet(rows, columns, ids)


def load_prompts(cfg: Config, tokenizer, template) -> tuple[PromptSet, PromptSet | None]:
    from tunery.data.dataset import check_template_tokens, load_records, nothing_left_error

    check_template_tokens(template, tokenizer, cfg.model_name_or_path or "")
    loaded = load_records(cfg)
    train = prompt_set(loaded.train, template, tokenizer, cfg.cutoff_len)
    if not train.rows:
        raise nothing_left_error(cfg, len(loaded.train) + sum(loaded.dropped.values()),
                                 {**loaded.dropped, "encoding: empty prompt": len(loaded.train)})
    evaluation = None
    if loaded.eval:
        evaluation = prompt_set(loaded.eval, template, tokenizer, cfg.cutoff_len, train.prompt_ids)
    logger.info("grpo prompts: %d%s", len(train.rows),
                f", evaluation prompts: {len(evaluation.rows)}" if evaluation else "")
    return train, evaluation


# ------------------------------------------------------------------ arguments
def _scale_rewards(value: str) -> str:
    return {"true": "group", "false": "none"}.get(str(value).lower(), str(value).lower())


def grpo_arguments(cfg: Config) -> GRPOConfig:
    """GRPOConfig from the run's TrainingArguments (as Tunery sets them: TRL's other defaults for learning_rate,
    logging_steps, bf16 and gradient checkpointing do not apply) plus the grpo options; TRL's own checks (batch sizes
    that do not divide into groups, ...) come back as one-line errors."""
    from tunery.train.artifacts import training_arguments
    from tunery.train.trainer_base import trl_arguments

    grpo = {name: cfg.values[name] for name in (
        "num_generations", "max_completion_length", "beta", "epsilon", "epsilon_high", "loss_type",
        "importance_sampling_level", "mask_truncated_completions", "num_iterations", "generation_batch_size",
        "use_vllm", "vllm_mode", "vllm_server_base_url", "vllm_gpu_memory_utilization")}
    grpo["scale_rewards"] = _scale_rewards(cfg.scale_rewards)
    grpo["shuffle_dataset"] = not cfg.disable_shuffling
    if cfg.reward_weights is not None:
        grpo["reward_weights"] = [float(w) for w in cfg.reward_weights]
    for name, default in SAMPLING_DEFAULTS.items():  # the chat defaults do not apply unless set
        grpo[name] = cfg.values[name] if name in cfg.explicit else default
    grpo["include_num_input_tokens_seen"] = "no"  # TRL counts prompt + completion tokens itself
    try:
        return trl_arguments(GRPOConfig, training_arguments(cfg), **grpo)
    except ValueError as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{cfg.where}: {first} — adjust per_device_train_batch_size, gradient_accumulation_steps, "
                          "generation_batch_size or num_generations") from None


# ------------------------------------------------------------------ completions.jsonl
def _number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


class CompletionsLog(TrainerCallback):
    """completions.jsonl: every completion sampled for the latest logging step (prompt, completion, each reward,
    the weighted total, the advantage). Resuming drops the lines the interrupted run wrote after its checkpoint."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, COMPLETIONS_FILE)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not os.path.exists(self.path):
            return
        if state.global_step == 0:
            os.remove(self.path)
            return
        with open(self.path, encoding="utf-8") as fh:
            rows = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= state.global_step]
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.writelines(rows)

    def write(self, step: int, rows: list[dict]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")


class TuneryGrpoTrainer(GRPOTrainer):
    def __init__(self, *args, prompts: PromptSet, eval_prompts: PromptSet | None, completions: CompletionsLog,
                 **kwargs):
        self.tunery_prompt_ids = prompts.prompt_ids
        self.tunery_columns = {"train": prompts.columns, "eval": eval_prompts.columns if eval_prompts else []}
        self.tunery_completions = completions
        self.tunery_generations = self.tunery_written = 0
        from tunery.train.trainer_base import init_with_policy_as_reference

        init_with_policy_as_reference(super().__init__, *args, **kwargs)  # as for dpo/kto

    def create_model_card(self, *args, **kwargs) -> None:
        return None  # Tunery writes its own artifacts: no README.md that could overwrite a user's file

    def _send_telemetry(self) -> None:
        return None

    def _tokenize_prompts(self, prompts: list):
        """Tunery's token ids of each prompt (the text is its decoded form, which reward functions read)."""
        if all(isinstance(p, str) and p in self.tunery_prompt_ids for p in prompts):
            return [list(self.tunery_prompt_ids[p]) for p in prompts], None, {}
        return super()._tokenize_prompts(prompts)

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        columns = self.tunery_columns[mode]
        inputs = [{"prompt": x["prompt"], **columns[x[ROW]]} for x in inputs]
        output = super()._generate_and_score_completions(inputs)
        if mode == "train":
            self.tunery_generations += 1
        return output

    def log(self, logs: dict, start_time: float | None = None) -> None:
        super().log(logs, start_time)
        fresh = self.tunery_generations != self.tunery_written
        if "loss" in logs and self.model.training and fresh and self.accelerator.is_main_process:
            self.tunery_written = self.tunery_generations
            self.tunery_completions.write(self.state.global_step, self.latest_samples())

    def latest_samples(self) -> list[dict]:
        """The completions of the latest generation batch (TRL keeps them, gathered over processes)."""
        names, weights = self.reward_func_names, self.reward_weights.tolist()
        rewards = {n: list(self._logs["rewards"][n]) for n in names}
        advantages = list(self._logs["advantages"])
        rows = []
        for i, (prompt, completion) in enumerate(zip(self._logs["prompt"], self._logs["completion"])):
            per = {n: _number(rewards[n][i]) for n in names}
            scored = [(v, w) for v, w in zip(per.values(), weights) if v is not None]
            rows.append({"prompt": prompt, "completion": completion, "rewards": per,
                         "reward": _number(sum(v * w for v, w in scored)) if scored else None,
                         "advantage": _number(advantages[i])})
        return rows


# ------------------------------------------------------------------ the run
def plotted_metrics(output_dir: str) -> list[str]:
    from tunery.train.plots import logged_metrics

    return [k for k in logged_metrics(output_dir)
            if k in PLOTTED or (k.startswith("rewards/") and k.endswith("/mean"))]


def run_grpo(cfg: Config) -> None:
    from transformers import set_seed

    from tunery.model.session import open_session
    from tunery.train.artifacts import prepare_output_dir, save_final
    from tunery.train.callbacks import InterruptCallback, LogCallback
    from tunery.train.checkpoints import check_fits_model
    from tunery.train.grpo_rewards import build_reward_funcs
    from tunery.train.plots import plot_all
    from tunery.train.workflow import TrainingInterrupted

    # 1. Everything that can fail on the user's input happens before the model loads.
    session = open_session(cfg, "train")
    tokenizer, template = session.tokenizer, session.template
    prompts, eval_prompts = load_prompts(cfg, tokenizer, template)
    args = grpo_arguments(cfg)
    with args.main_process_first(local=False, desc="output_dir"):
        resume = prepare_output_dir(cfg, is_main=args.process_index == 0)
    from tunery.runs import card

    card.begin(cfg, resume)

    # 2. Policy (with its method), reward functions.
    set_seed(cfg.seed)
    model = session.load_model(trainable=True)
    if resume:
        check_fits_model(resume, model)
    model.generation_config.eos_token_id = template.stop_token_ids(tokenizer)  # a completion ends with the turn
    rewards = build_reward_funcs(cfg, tokenizer, prompts.prompt_ids, args.device)

    # 3. TRL's trainer does the loop.
    interrupt = InterruptCallback()
    completions = CompletionsLog(cfg.output_dir)
    trainer = TuneryGrpoTrainer(
        model=model, reward_funcs=rewards, args=args, train_dataset=prompts.dataset(),
        eval_dataset=eval_prompts.dataset() if eval_prompts and eval_prompts.rows and cfg.do_eval else None,
        processing_class=tokenizer, callbacks=[LogCallback(cfg.output_dir), completions, interrupt],
        prompts=prompts, eval_prompts=eval_prompts, completions=completions,
    )

    # 4. Train, save, evaluate, plot.
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except TuneryError:  # e.g. a reward function's output: end the progress bar's line before the error's
        for callback in trainer.callback_handler.callbacks:
            bar = getattr(callback, "training_bar", None)
            if bar is not None:
                bar.close()
        raise
    finally:
        interrupt.restore()
    if interrupt.stopped_at is not None:
        raise TrainingInterrupted(f"training interrupted at step {interrupt.stopped_at}: checkpoint saved in "
                                  f"{cfg.output_dir}/checkpoint-{interrupt.stopped_at} — rerun the same command to "
                                  "resume")
    save_final(trainer, cfg, tokenizer, template, result)
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if cfg.plot_loss and trainer.is_world_process_zero():
        for path in plot_all(cfg.output_dir, plotted_metrics(cfg.output_dir)):
            logger.info("saved %s", path)

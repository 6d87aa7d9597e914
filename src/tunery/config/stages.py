"""What a training stage is, declared once: one row per stage.

Every layer reads its piece of a stage from here instead of testing stage names: the option rules (config/), the
record conversion, encoding, packing and preview (data/), the recipe that trains (train/run.py), the memory estimate
and the chat/export side (what the run saved). Adding a stage is one row here plus one trainer module that defines
the row's ``trainer`` function. (tests/test_stages.py checks that every row's pieces exist and that no other module
lists stage names.)

Columns:

* ``reads`` — the record kind the stage converts its datasets to (data/formats.py):
  ``text`` (first prompt message only), ``chat`` (prompt + one response), ``ranking`` (prompt + chosen + rejected, a
  ``ranking: true`` dataset), ``kto`` (prompt + one response + ``kto_tag``), ``prompt`` (the prompt only; a
  response, if any, is kept as the reference answer).
* ``encoder`` — the encoder of data/encode.py: ``pretrain`` (texts + eos concatenated and cut into blocks),
  ``supervised``, ``pairwise``, ``kto``, ``unsupervised``.
* ``batch`` — how examples are collated (the collator itself is chosen by the trainer module).
* ``trainer`` — ``module:function`` that trains the stage (imported lazily: ``tunery train -h`` stays fast).
* ``saves`` — ``lm`` (the adapter or model with the tokenizer and chat template) or ``score`` (the same with a
  1-output score head, ``value_head.safetensors``: the model is loaded as a reward model, chat/api score with it).
* ``sequences`` — model rows one example puts through the model per step (chosen + rejected; kto: the completion
  and its KL pair) — the memory estimate's batch.
* ``uses`` — what else of Tunery the stage uses; options of a feature no stage of the run uses are refused:
  ``packed_rows`` (packing/neat_packing/padding_free rows of several examples), ``sft_loss`` (DFT/EAFT/ASFT),
  ``predict`` (do_predict generates answers), ``pref_loss``, ``reference_model`` (a frozen reference forward pass),
  ``reward_model`` (a trained reward model scores the samples), ``reward_funcs`` (GRPO's reward functions and
  options; the rows' other columns go to them), ``trl`` (trained on a TRL trainer), ``cpu_fsdp`` (``fsdp`` without
  GPUs: FSDP2 through transformers' load-time sharding, train/cpu_fsdp.py), ``workflow`` (trained by the shared
  Trainer recipe of train/workflow.py: debug_data, eval_on_each_dataset), ``train_metrics`` (the Trainer's train
  metrics: include_effective_tokens_per_second), ``pad_labels`` (padded label rows: ignore_pad_token_for_loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tunery.errors import ConfigError, did_you_mean

RECORD_KINDS = ("text", "chat", "ranking", "kto", "prompt")
ENCODERS = ("pretrain", "supervised", "pairwise", "kto", "unsupervised")
FEATURES = ("packed_rows", "sft_loss", "predict", "pref_loss", "reference_model", "reward_model", "reward_funcs",
            "trl", "cpu_fsdp", "workflow", "train_metrics", "pad_labels")


@dataclass(frozen=True)
class StageSpec:
    name: str
    reads: str
    encoder: str
    batch: str
    trainer: str
    saves: str
    sequences: int
    uses: frozenset
    help: str

    @property
    def trains_responses(self) -> bool:
        """The stage trains on the responses' text: records with an empty response are dropped."""
        return self.reads in ("chat", "ranking", "kto")

    def __post_init__(self):
        assert self.reads in RECORD_KINDS and self.encoder in ENCODERS and self.saves in ("lm", "score"), self
        assert set(self.uses) <= set(FEATURES), self


def _row(name, reads, encoder, batch, trainer, saves, sequences, uses, help):
    return StageSpec(name, reads, encoder, batch, trainer, saves, sequences, frozenset(uses), help)


STAGES: dict[str, StageSpec] = {s.name: s for s in (
    _row("pt", "text", "pretrain", "blocks of cutoff_len tokens (padded when packing: false)",
         "tunery.train.pt:run_pt", "lm", 1, ("cpu_fsdp", "workflow", "train_metrics"),
         "pre-training on text"),
    _row("sft", "chat", "supervised", "padded, packed (packing/neat_packing) or padding-free rows",
         "tunery.train.sft:run_sft", "lm", 1, ("packed_rows", "sft_loss", "predict", "cpu_fsdp", "workflow",
                                                 "train_metrics", "pad_labels"),
         "supervised fine-tuning"),
    _row("rm", "ranking", "pairwise", "chosen and rejected rows, padded",
         "tunery.train.rm:run_rm", "score", 2, ("trl", "workflow", "train_metrics"),
         "reward model"),
    _row("ppo", "prompt", "unsupervised", "prompts padded on the left; sampled responses",
         "tunery.train.ppo:run_ppo", "lm", 1, ("reward_model",),
         "PPO with a reward model"),
    _row("dpo", "ranking", "pairwise", "chosen and rejected rows, padded",
         "tunery.train.dpo:run_dpo", "lm", 2, ("pref_loss", "reference_model", "trl", "workflow", "train_metrics"),
         "preference optimisation: DPO and the other pref_loss values, e.g. orpo, simpo"),
    _row("kto", "kto", "kto", "completion rows and their mismatched KL rows, padded",
         "tunery.train.kto:run_kto", "lm", 2, ("reference_model", "trl", "workflow", "train_metrics"),
         "KTO on desirable/undesirable answers"),
    _row("grpo", "prompt", "unsupervised", "prompts; TRL samples num_generations completions each",
         "tunery.train.grpo:run_grpo", "lm", 1, ("reward_funcs", "trl", "train_metrics"),
         "online RL with reward functions, on TRL's GRPOTrainer"),
)}

# Encoding targets that are not stages: "predict" encodes the prompts do_predict answers (the reference answer kept
# in the labels).
NOT_STAGES = {"predict": "unsupervised"}


class _EncodeAs(Mapping):
    """stage (or "predict") -> encoder, read from the table at each lookup."""

    def __getitem__(self, name):
        if name in NOT_STAGES:
            return NOT_STAGES[name]
        return STAGES[name].encoder

    def __iter__(self):
        return iter([*STAGES, *NOT_STAGES])

    def __len__(self):
        return len(STAGES) + len(NOT_STAGES)


ENCODE_AS: Mapping[str, str] = _EncodeAs()


def stage_spec(name: str) -> StageSpec:
    """The row of stage ``name`` (a ConfigError naming the stages for any other name)."""
    try:
        return STAGES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown stage '{name}'{did_you_mean(str(name), STAGES)} — use one of "
                          f"{', '.join(STAGES)}") from None


def encoder_of(name: str) -> str:
    """The encoder for stage ``name`` (or "predict")."""
    if name not in ENCODE_AS:
        raise ConfigError(f"unknown stage '{name}'{did_you_mean(str(name), ENCODE_AS)}; "
                          f"available: {', '.join(ENCODE_AS)}")
    return ENCODE_AS[name]


def uses(stage: str, feature: str) -> bool:
    """Whether stage ``stage`` uses ``feature`` (one of FEATURES)."""
    assert feature in FEATURES, feature
    return feature in stage_spec(stage).uses


def stages_using(feature: str) -> list[str]:
    assert feature in FEATURES, feature
    return [s.name for s in STAGES.values() if feature in s.uses]


def stages_reading(kind: str) -> list[str]:
    assert kind in RECORD_KINDS, kind
    return [s.name for s in STAGES.values() if s.reads == kind]


def names_text(names) -> str:
    """"a", "a or b", "a, b or c" — for messages naming the stages that do something."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

"""Dataset, template and encoding options (LLaMA-Factory's DataArguments names)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunery.config.option import Option, Rule, non_negative, positive
from tunery.config.stages import STAGES, names_text, stage_spec, stages_using, uses
from tunery.errors import ConfigError
from tunery.utils.logging import get_logger

logger = get_logger(__name__)

if TYPE_CHECKING:
    from tunery.config.loader import Config

G = "data"


def _val_size(value):
    if value < 0 or (value >= 1 and value != int(value)):
        return "give a fraction in [0, 1) or a whole number of records"
    return None


def _dataset_dir(value: str):
    if value.upper() == "ONLINE" or os.path.isdir(value):
        return None
    return "no such folder — it should hold dataset_info.json (LLaMA-Factory's data/ folder)"


OPTIONS = [
    Option("template", "str", None, "Chat template name (llama3, qwen, default, empty, …), or 'tokenizer' for the "
           "tokenizer's own Jinja chat template.", G),
    Option("dataset", "list", None, "Training dataset name(s) from dataset_info.json, comma-separated.", G),
    Option("eval_dataset", "list", None, "Evaluation dataset name(s), comma-separated.", G),
    Option("dataset_dir", "str", "data", "Folder holding dataset_info.json and the data files.", G,
           check=_dataset_dir),
    Option("cutoff_len", "int", 2048, "Maximum tokens per example after tokenization.", G, check=positive),
    Option("train_on_prompt", "bool", False, "Also train on the prompt tokens.", G, advanced=True),
    Option("mask_history", "bool", False, "Train only on the last assistant turn.", G, advanced=True),
    Option("streaming", "bool", False, "Stream the dataset (pt, sft): read, encoded and packed on the fly as an "
           "IterableDataset, nothing written to disk; needs max_steps. Without it Tunery still keeps memory flat and "
           "caches the encoding.", G, advanced=True),
    Option("buffer_size", "int", 16384, "Shuffle buffer size when streaming (examples).", G, check=positive,
           advanced=True),
    Option("mix_strategy", "str", "concat", "How several datasets are mixed.", G,
           choices=("concat", "interleave_under", "interleave_over"), advanced=True),
    Option("interleave_probs", "list", None, "Sampling probabilities for interleaving, comma-separated.", G,
           advanced=True),
    Option("overwrite_cache", "bool", False, "Re-encode the datasets even when tokenized_path or the encoding cache "
           "holds them.", G,
           advanced=True),
    Option("preprocessing_batch_size", "int", 1000, "Records per encoding batch.", G, check=positive, advanced=True),
    Option("preprocessing_num_workers", "int", None, "Processes used to encode the datasets (at most the CPU cores, "
           "and one per 1000 records).", G, check=positive, advanced=True),
    Option("max_samples", "int", None, "Use at most this many records of each dataset.", G, check=positive),
    Option("val_size", "number", 0.0, "Held-out evaluation split: a fraction in [0, 1) or a record count.", G,
           check=_val_size),
    Option("eval_on_each_dataset", "bool", False, "Evaluate each eval_dataset separately: metrics "
           "eval_<name>_loss, ... per dataset instead of one eval_loss.", G, advanced=True),
    Option("ignore_pad_token_for_loss", "bool", True, "Padding is not trained (its labels are ignored); false "
           "trains it as the pad token, as LLaMA-Factory does (stage sft, padded batches).", G, advanced=True),
    Option("packing", "bool", None, "Pack several examples into sequences of up to cutoff_len tokens (sft; pt packs "
           "unless false). Packed examples see the ones before them in their sequence.", G, advanced=True),
    Option("neat_packing", "bool", False, "Packing where packed examples cannot attend to each other (sft; implies "
           "packing).", G, advanced=True),
    Option("padding_free", "bool", None, "Train on each batch as one row without padding: the examples are "
           "concatenated and kept apart by their position_ids (block-diagonal attention), so no compute goes to pad "
           "tokens and the loss is the padded batch's (sft; with packing only as neat_packing). Unset: on when a "
           "quick check shows the model keeps the examples apart (not under DeepSpeed/FSDP or with NEFTune).", G, advanced=True),
    Option("tool_format", "str", None, "Tool-call format to use instead of the template's own.", G, advanced=True),
    Option("default_system", "str", None, "System prompt used when a record has none (overrides the template's).",
           G),
    Option("enable_thinking", "bool", True, "For reasoning templates: keep the thinking block.", G, advanced=True),
    Option("tokenized_path", "str", None, "Folder where the encoded datasets are saved on the first run and loaded "
           "from on later runs (loading and encoding skipped).", G, advanced=True),
    Option("placeholders", "dict", None, "Values for {{placeholders}} in the data, e.g. {name: Tunery, author: me}.",
           G),
    Option("media_dir", "str", None, "Folder of images/videos/audios for multimodal datasets.", G, advanced=True,
           unsupported="multimodal data"),
    Option("preview_num", "int", 3, "tunery preview: how many records to show (--num N).", "preview",
           check=non_negative),
    Option("preview_format", "str", "text", "tunery preview: text (rendered, trained tokens marked) or json (one "
           "object per training item, then a summary) (--format).", "preview", choices=("text", "json")),
]


def has_tokenized_data(path: str | None) -> bool:
    """A folder that ``save_to_disk`` wrote (by Tunery or LLaMA-Factory): what ``tokenized_path`` loads from."""
    return bool(path) and os.path.isfile(os.path.join(os.path.expanduser(path), "dataset_dict.json"))


def _needs_dataset(cfg) -> None:
    if cfg.do_train and not cfg.dataset and not has_tokenized_data(cfg.tokenized_path):
        raise ConfigError(f"{cfg.where}: option 'dataset' is required for training — name one or more entries of "
                          f"{os.path.join(cfg.dataset_dir, 'dataset_info.json')}")


def _interleave(cfg: Config) -> None:
    if cfg.interleave_probs and cfg.dataset and len(cfg.interleave_probs) != len(cfg.dataset):
        raise ConfigError(f"{cfg.where}: option 'interleave_probs' has {len(cfg.interleave_probs)} values for "
                          f"{len(cfg.dataset)} datasets — give one probability per dataset")


def _val_and_eval(cfg: Config) -> None:
    if cfg.val_size and cfg.eval_dataset:
        raise ConfigError(f"{cfg.where}: options 'val_size' and 'eval_dataset' both set — use one of them")


def _preview_dataset(cfg: Config) -> None:
    if not cfg.dataset:
        raise ConfigError(f"{cfg.where}: option 'dataset' is required for preview — name one or more entries of "
                          f"{os.path.join(cfg.dataset_dir, 'dataset_info.json')}")


def _loss_padding(cfg) -> None:
    if cfg.ignore_pad_token_for_loss:
        return
    if not uses(cfg.stage, "pad_labels"):
        raise ConfigError(f"{cfg.where}: option 'ignore_pad_token_for_loss: false' works with stage "
                          f"{names_text(stages_using('pad_labels'))} only (stage is {cfg.stage}, whose padding is never "
                          "trained) — drop it")
    if cfg.padding_free:
        raise ConfigError(f"{cfg.where}: ignore_pad_token_for_loss: false trains the padding, and padding_free "
                          "batches have none — drop one of them")


def _each_eval_dataset(cfg) -> None:
    if cfg.eval_on_each_dataset and not cfg.eval_dataset:
        raise ConfigError(f"{cfg.where}: option 'eval_on_each_dataset' evaluates each dataset of eval_dataset, "
                          "which is not set — name them in eval_dataset, or drop eval_on_each_dataset")


def check_packing_options(cfg: Config) -> None:  # once, as the rule _packing
    """Refuse neat_packing outside the stages that pack rows (sft, as LLaMA-Factory does); warn that packing does
    nothing in a stage that neither packs rows nor concatenates texts into blocks (pt)."""
    rows = names_text(stages_using("packed_rows"))
    if cfg.neat_packing and not uses(cfg.stage, "packed_rows"):
        raise ConfigError(f"{cfg.where}: option 'neat_packing' works with stage {rows} only (got stage {cfg.stage}) "
                          "— remove neat_packing")
    if cfg.padding_free:
        if not uses(cfg.stage, "packed_rows"):
            raise ConfigError(f"{cfg.where}: option 'padding_free' works with stage {rows} only (got stage "
                              f"{cfg.stage}) — remove padding_free")
        if cfg.packing and not cfg.neat_packing:
            raise ConfigError(f"{cfg.where}: padding_free keeps examples apart but packing (without neat_packing) "
                              "lets packed examples see each other — set neat_packing: true or remove padding_free")
    if cfg.packing and not (uses(cfg.stage, "packed_rows") or stage_spec(cfg.stage).encoder == "pretrain"):
        packers = [s for s in STAGES if uses(s, "packed_rows") or STAGES[s].encoder == "pretrain"]
        logger.warning("option 'packing' has no effect in stage %s (only %s pack), except that examples are "
                       "cut to cutoff_len - 1 as in LLaMA-Factory — remove packing", cfg.stage,
                       " and ".join(packers))


def _packing(cfg) -> None:
    check_packing_options(cfg)


def check_streaming(cfg) -> None:
    """The options ``streaming: true`` cannot work with, each refused in one line."""
    if not cfg.streaming:
        return
    where = cfg.where
    if not uses(cfg.stage, "streaming"):
        raise ConfigError(f"{where}: option 'streaming' works with stage {' or '.join(stages_using('streaming'))} "
                          f"(got stage {cfg.stage}) — remove streaming (Tunery's non-streaming path keeps memory flat "
                          "in the data's size too)")
    if not cfg.max_steps or cfg.max_steps < 0:
        raise ConfigError(f"{where}: option 'streaming' needs max_steps: a streamed dataset has no length to count "
                          "epochs in — set max_steps (e.g. max_steps: 1000) or remove streaming")
    if cfg.max_samples is not None:
        raise ConfigError(f"{where}: options 'max_samples' and 'streaming' cannot be combined (as in LLaMA-Factory) "
                          "— remove max_samples (max_steps bounds a streamed run)")
    if cfg.val_size and cfg.val_size < 1:
        raise ConfigError(f"{where}: option 'val_size' must be a record count with streaming (got {cfg.val_size}: a "
                          "fraction needs the dataset's length) — give e.g. val_size: 500")
    if cfg.tokenized_path:
        raise ConfigError(f"{where}: options 'tokenized_path' and 'streaming' cannot be combined (a stream is not "
                          "saved) — remove one of them")


def _streaming(cfg) -> None:
    check_streaming(cfg)


RULES = [
    Rule(_needs_dataset, frozenset({"train"})),
    Rule(_preview_dataset, frozenset({"preview"})),
    Rule(_packing, frozenset({"train", "preview"})),
    Rule(_interleave, frozenset({"train"})),
    Rule(_streaming, frozenset({"train"})),
    Rule(_val_and_eval, frozenset({"train"})),
    Rule(_loss_padding, frozenset({"train"})),
    Rule(_each_eval_dataset, frozenset({"train"})),
]

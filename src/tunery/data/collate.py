"""Batch collators for sft: plain padding, or packed rows whose examples stay apart.

:func:`build_collator` is what the sft recipe uses. Without packing it is transformers' ``DataCollatorForSeq2Seq``
(pad to the batch's longest example, labels padded with ``IGNORE_INDEX``). With packing it is
:class:`PackedCollator`:

* ``neat_packing`` on sdpa/eager attention: rows padded to the batch's longest, ``position_ids`` given (restarting at
  0 per packed example, padding forming a block of its own) and **no** ``attention_mask`` — transformers (5.x,
  ``masking_utils.find_packed_sequence_indices``) then derives a block-diagonal causal mask from the position_ids, so
  packed examples cannot attend to each other. ``use_cache=False`` is put in the batch: with a KV cache transformers
  skips that detection (the Trainer turns the cache off too, unless ``use_cache: true`` is configured);
* ``neat_packing`` on flash-attention: the whole batch is flattened into one row without padding (transformers'
  ``DataCollatorWithFlattening`` layout), for which flash-attention runs its variable-length kernel per example
  (transformers recognises packing from position_ids only in batches of one row);
* ``padding_free`` (packed or not): the same flattened row on any attention implementation — no compute goes to
  padding, and with sdpa/eager the block-diagonal mask from the position_ids keeps the examples apart, so the loss
  is the padded batch's;
* ``packing`` without ``neat_packing``: the usual all-ones ``attention_mask`` plus the restarting ``position_ids``,
  so packed examples see the ones before them in their row, as in LLaMA-Factory.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunery.utils.logging import get_logger

from ..config.stages import uses
from .packing import packing_enabled
from .records import IGNORE_INDEX

logger = get_logger(__name__)

FLASH_PREFIXES = ("flash_attention", "kernels-community/flash", "kernels-community/vllm-flash")


def _pad_multiple(cfg) -> int | None:
    return 8 if (cfg.fp16 or cfg.bf16 or cfg.pure_bf16) \
        else None


def uses_flash_attention(cfg=None, model=None) -> bool:
    """Whether the model runs flash-attention (then packed batches must be one flattened row)."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None) if config is not None else None
    if impl is None and cfg is not None:
        impl = "flash_attention_2" if cfg.flash_attn == "fa2" else None
    return bool(impl) and str(impl).startswith(FLASH_PREFIXES)


_FROM_CFG = object()


def padding_free_enabled(cfg, model=None) -> bool:
    """``padding_free: true`` → on; ``false`` → off; unset → on for sft when the model (given) is seen to keep
    flattened examples apart (:mod:`tunery.model.packed_attention`), except under DeepSpeed/FSDP, whose sharded
    weights cannot run that check before training, with plain packing (rows already full, examples not apart) and
    with NEFTune (its noise is scaled by the row's length, which would become the whole batch's)."""
    setting = cfg.padding_free
    if setting is not None:
        return bool(setting)
    if not uses(cfg.stage, "packed_rows") or (packing_enabled(cfg) and not cfg.neat_packing) or cfg.deepspeed \
            or cfg.fsdp:
        return False
    if cfg.neftune_noise_alpha:  # NEFTune scales its noise by the row length: keep padded rows
        return False
    if not cfg.ignore_pad_token_for_loss:  # the padding is to be trained: keep padded rows
        return False
    if model is None:  # nothing to check: stay padded
        return False
    from tunery.model.packed_attention import keeps_examples_apart

    if keeps_examples_apart(model):
        logger.info("padding-free batches: each batch is one row, its examples kept apart (padding_free: false pads)")
        return True
    logger.info("padding_free off: this model lets examples in one row attend to each other — batches are padded")
    return False


def build_collator(cfg, tokenizer, pad_to_multiple_of=_FROM_CFG, model=None):
    """The data collator for an sft run: ``DataCollatorForSeq2Seq`` unpacked, :class:`PackedCollator` packed or
    padding-free.

    The signature fits ``Stage.collator`` (cfg, tokenizer, pad_to_multiple_of, model); without ``pad_to_multiple_of``
    it is 8 for fp16/bf16 runs. ``model`` (optional) tells the attention implementation, without it ``flash_attn:
    fa2`` in ``cfg`` does (the only way a run gets flash-attention), and decides an unset ``padding_free``."""
    pad_to = _pad_multiple(cfg) if pad_to_multiple_of is _FROM_CFG else pad_to_multiple_of
    padding_free = padding_free_enabled(cfg, model)
    # ignore_pad_token_for_loss: false trains the padding too (its labels are the pad token, LLaMA-Factory's rule)
    label_pad = IGNORE_INDEX if cfg.ignore_pad_token_for_loss else tokenizer.pad_token_id
    if not packing_enabled(cfg) and not padding_free:
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=label_pad, pad_to_multiple_of=pad_to)
    neat = bool(cfg.neat_packing) or padding_free
    flatten = padding_free or (neat and uses_flash_attention(cfg, model))
    return PackedCollator(pad_token_id=tokenizer.pad_token_id, neat=neat, flatten=flatten,
                          pad_to_multiple_of=None if flatten else pad_to, label_pad_token_id=label_pad)


@dataclass
class PackedCollator:
    """Collate packed rows (``input_ids``, ``labels``, ``position_ids``) into tensors; see the module docstring.
    Unpacked examples (no ``position_ids``, e.g. an evaluation-only run's data) are single-example rows."""

    pad_token_id: int
    neat: bool = True
    flatten: bool = False
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = IGNORE_INDEX

    def __call__(self, features: list[dict]) -> dict:
        import torch

        if self.flatten:
            input_ids, labels, position_ids = [], [], []
            for f in features:
                positions = _positions(f)
                input_ids += list(f["input_ids"])
                position_ids += positions
                # a token at position 0 starts an example: unflattened it is never predicted, so here it must not
                # be predicted from the previous example's last token either
                labels += [IGNORE_INDEX if p == 0 else y for p, y in zip(positions, f["labels"])]
            out = {key: torch.tensor([value], dtype=torch.long)
                   for key, value in (("input_ids", input_ids), ("labels", labels), ("position_ids", position_ids))}
            out["use_cache"] = False
            return out
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids, labels, position_ids, attention_mask = [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = longest - n
            input_ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [self.label_pad_token_id] * pad)
            # padding as one more "example" (positions 0..pad-1) keeps it out of the real examples' blocks
            position_ids.append(_positions(f) + list(range(pad)))
            attention_mask.append([1] * n + [0] * pad)
        out = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(position_ids, dtype=torch.long),
        }
        if self.neat:
            out["use_cache"] = False
        else:
            out["attention_mask"] = torch.tensor(attention_mask, dtype=torch.long)
        return out


def _positions(feature: dict) -> list[int]:
    positions = feature.get("position_ids")
    return list(positions) if positions is not None else list(range(len(feature["input_ids"])))

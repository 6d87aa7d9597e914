"""`tunery export`: merge LoRA adapters into the base model and write a standalone model folder.

The folder holds the weights in `infer_dtype` (auto: the checkpoint's own dtype) as safetensors shards of at most
`export_size` GB (PyTorch .bin shards with export_legacy_format), the tokenizer with the chat template the model was
trained with (chat_template.jinja), a generation_config.json that stops at the template's stop words, and an Ollama
Modelfile. `export_hub_model_id` then uploads the folder.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
from typing import TYPE_CHECKING

from tunery.config.stages import stage_spec
from tunery.errors import TuneryError
from tunery.export import target as T
from tunery.utils.logging import get_logger

if TYPE_CHECKING:
    from tunery.config.loader import Config

logger = get_logger(__name__)

VALUE_HEAD_FILE = "value_head.safetensors"


def _target_dtype(cfg: Config):
    import torch

    names = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if cfg.infer_dtype in names:
        return names[cfg.infer_dtype]
    config_file = os.path.join(os.path.expanduser(cfg.model_name_or_path), "config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as fh:
            config = json.load(fh)
        saved = config.get("dtype") or config.get("torch_dtype")
        if saved in names:
            return names[saved]
    return torch.float32


def run_export(cfg: Config) -> str:
    """Merge, save and (optionally) upload; returns the export folder."""
    import torch

    from tunery.model.session import open_session

    if cfg.quantization_bit is not None:
        raise TuneryError("cannot merge adapters into a quantized model — drop quantization_bit: export loads the base "
                          "model in full precision")
    needed = int(T.weights_bytes(cfg.model_name_or_path) * _size_ratio(cfg) * 1.05) + 2**24
    final_dir = T.check_export_target(cfg.export_dir, cfg.export_overwrite, needed)  # before the model loads
    session = open_session(cfg, "export")
    tokenizer, template = session.tokenizer, session.template
    # every adapter merged, in order (on the GPU with export_device: auto)
    model = session.load_model(to_gpu=cfg.export_device == "auto" and torch.cuda.is_available())
    dtype = _target_dtype(cfg)
    model = model.to(device="cpu", dtype=dtype)
    stop_ids = template.stop_token_ids(tokenizer)
    model.generation_config.eos_token_id = stop_ids[0] if len(stop_ids) == 1 else stop_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    for key in ("temperature", "top_p", "top_k"):  # keep the saved config valid when sampling is off
        if not model.generation_config.do_sample and getattr(model.generation_config, key, None) is not None:
            setattr(model.generation_config, key, None)
    model.config.use_cache = True

    export_dir = T.begin(final_dir)
    try:
        _write(cfg, model, tokenizer, template, export_dir)
    except BaseException as err:
        T.abandon(export_dir)
        why = _write_problem(err)
        if why is None:
            raise
        raise TuneryError(f"export_dir '{cfg.export_dir}': {why} and export again; an earlier export there is "
                          "untouched") from None
    T.finish(export_dir, final_dir)
    kind = "pytorch_model*.bin" if cfg.export_legacy_format else "model*.safetensors"
    shards = glob.glob(os.path.join(final_dir, kind))
    print(f"exported to {final_dir}: {len(shards)} {kind.split('.')[-1]} shard(s) in "
          f"{str(dtype).replace('torch.', '')}, "
          "tokenizer, chat template, generation_config.json and an Ollama Modelfile", flush=True)
    if cfg.export_hub_model_id:
        push_to_hub(final_dir, cfg.export_hub_model_id, cfg.hf_hub_token)
    return final_dir


def _write_problem(err: BaseException) -> str | None:
    """What went wrong writing the export, for one line (None: not a write error — it propagates)."""
    import re

    code = err.errno if isinstance(err, OSError) else None
    if code is None and type(err).__name__ == "SafetensorError":  # safetensors' Rust I/O errors: "... (os error N)"
        found = re.search(r"os error (\d+)", str(err))
        code = int(found.group(1)) if found else None
    if code is None:
        return None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full — free some space"
    return f"cannot write there ({os.strerror(code)}) — fix that"


def _size_ratio(cfg: Config) -> float:
    """Bytes per weight of the export over bytes per weight of the checkpoint (1 when unknown)."""
    sizes = {"float16": 2, "bfloat16": 2, "float32": 4}
    config_file = os.path.join(os.path.expanduser(cfg.model_name_or_path), "config.json")
    saved = None
    if os.path.isfile(config_file):
        try:
            with open(config_file, encoding="utf-8") as fh:
                config = json.load(fh)
            saved = config.get("dtype") or config.get("torch_dtype")
        except (OSError, ValueError):
            saved = None
    if cfg.infer_dtype in sizes and saved in sizes:
        return sizes[cfg.infer_dtype] / sizes[saved]
    return 1.0


def _write(cfg: Config, model, tokenizer, template, export_dir: str) -> None:
    """Every file of the export into `export_dir` (the partial folder)."""
    from tunery.data.template_select import sync_chat_template
    from tunery.export.modelfile import ollama_modelfile

    shard_bytes = max(1, int(cfg.export_size * 10**9))
    if cfg.export_legacy_format:
        _save_legacy(model, export_dir, shard_bytes)
    else:
        model.save_pretrained(export_dir, max_shard_size=shard_bytes)
    sync_chat_template(tokenizer, template)
    tokenizer.padding_side = "left"  # batched generation with the exported tokenizer pads on the left
    tokenizer.save_pretrained(export_dir)
    with open(os.path.join(export_dir, "Modelfile"), "w", encoding="utf-8") as fh:
        fh.write(ollama_modelfile(template, tokenizer))
    if stage_spec(cfg.stage).saves == "score":
        for folder in list(cfg.adapter_name_or_path or [])[::-1]:
            head = os.path.join(os.path.expanduser(folder), VALUE_HEAD_FILE)
            if os.path.isfile(head):
                shutil.copy(head, os.path.join(export_dir, VALUE_HEAD_FILE))
                break


def _save_legacy(model, export_dir: str, shard_bytes: int) -> None:
    """PyTorch pickle shards (pytorch_model-0000i-of-0000n.bin + index), as transformers 4 wrote them."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards

    state = model.state_dict()
    split = split_torch_state_dict_into_shards(state, filename_pattern="pytorch_model{suffix}.bin",
                                               max_shard_size=shard_bytes)
    for filename, names in split.filename_to_tensors.items():
        torch.save({name: state[name].contiguous() for name in names}, os.path.join(export_dir, filename))
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": split.tensor_to_filename}
        with open(os.path.join(export_dir, "pytorch_model.bin.index.json"), "w", encoding="utf-8") as fh:
            json.dump(index, fh, indent=2)
    model.config.save_pretrained(export_dir)
    model.generation_config.save_pretrained(export_dir)


def push_to_hub(folder: str, repo_id: str, token=None) -> None:
    """Upload the export folder to a hub model repo (created when missing); offline or refused → one clear line."""
    from huggingface_hub import HfApi, constants

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    hint = f"the export in '{folder}' is complete; upload it later with `hf upload {repo_id} {folder}`"
    if offline:
        raise TuneryError(f"export_hub_model_id: cannot push to '{repo_id}' because the Hugging Face hub is in "
                          f"offline mode (HF_HUB_OFFLINE) — {hint}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", ignore_patterns=[T.MARKER],
                          commit_message="Upload model exported by Tunery")
    except Exception as err:  # noqa: BLE001 - network, auth and hub errors all end the same way
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TuneryError(f"export_hub_model_id: could not push to '{repo_id}' ({reason}) — check the network and "
                          f"the token (hf_hub_token or HF_TOKEN); {hint}") from None
    print(f"pushed to https://huggingface.co/{repo_id}", flush=True)

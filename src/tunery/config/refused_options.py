"""LLaMA-Factory options Tunery does not implement, declared once with the reason and what to use instead.

A LLaMA-Factory YAML that sets one of them to anything but its default stops with one line naming the option and
the reason (never "unknown option"); the default value is accepted, so YAML files that spell defaults out still run.
"""

from __future__ import annotations

from tunery.config.option import Option

G = "not supported (LLaMA-Factory)"

_MULTIMODAL = ("multimodal inputs: Tunery trains text-only models — drop the option (and the images/videos/audios "
               "columns), or use LLaMA-Factory for vision/audio models")
_KT = "KTransformers (CPU/GPU hybrid MoE kernels) — train with lora or freeze on the plain transformers model"
_SGLANG = "the SGLang engine — use infer_backend: vllm (vllm_* options) or huggingface"
_MCA = "Megatron-Core training (MCA) — use DeepSpeed (deepspeed: ds_z3_config.json) or FSDP for large models"
_HYPER = "the HyperParallel backend — use DeepSpeed or FSDP (fsdp, fsdp_config) through torchrun"
_UNSLOTH = "unsloth's patched kernels — use enable_liger_kernel (GPU) or flash_attn: fa2 for speed"
_HUB = ("hub download: Tunery reads Hugging Face hub ids and local folders — download from ModelScope/Modelers "
        "first (`modelscope download --model ID --local_dir DIR`) and give the folder as model_name_or_path")
_MOD = ("mixture of depths: its library (mixture-of-depth, MoD) does not import with transformers 5 — train the "
        "model without it")

_QAPOLLO = "Q-APOLLO (quantized APOLLO, LLaMA-Factory after 0.9.5) — use use_apollo with the apollo_* options"

# name -> (kind, LLaMA-Factory's default, reason)
REFUSED = {
    "image_max_pixels": ("int", 589824, _MULTIMODAL),
    "image_min_pixels": ("int", 1024, _MULTIMODAL),
    "image_do_pan_and_scan": ("bool", False, _MULTIMODAL),
    "crop_to_patches": ("bool", False, _MULTIMODAL),
    "video_max_pixels": ("int", 65536, _MULTIMODAL),
    "video_min_pixels": ("int", 256, _MULTIMODAL),
    "video_fps": ("float", 2.0, _MULTIMODAL),
    "video_maxlen": ("int", 128, _MULTIMODAL),
    "use_audio_in_video": ("bool", False, _MULTIMODAL),
    "audio_sampling_rate": ("int", 16000, _MULTIMODAL),
    "freeze_vision_tower": ("bool", True, _MULTIMODAL),
    "freeze_multi_modal_projector": ("bool", True, _MULTIMODAL),
    "freeze_language_model": ("bool", False, _MULTIMODAL),
    "use_kt": ("bool", False, _KT),
    "kt_weight_path": ("str", None, _KT),
    "kt_expert_checkpoint_path": ("str", None, _KT),
    "kt_use_lora_experts": ("bool", None, _KT),
    "kt_lora_expert_num": ("int", None, _KT),
    "kt_lora_expert_intermediate_size": ("int", None, _KT),
    "sglang_maxlen": ("int", 4096, _SGLANG),
    "sglang_mem_fraction": ("float", 0.7, _SGLANG),
    "sglang_tp_size": ("int", -1, _SGLANG),
    "sglang_config": ("dict", None, _SGLANG),
    "sglang_lora_backend": ("str", "triton", _SGLANG),
    "use_mca": ("bool", False, _MCA),
    "use_hyper_parallel": ("bool", False, _HYPER),
    "hyper_parallel_args": ("str", None, _HYPER),
    "use_unsloth_gc": ("bool", False, _UNSLOTH + " (gradient_checkpointing is the plain torch one)"),
    "use_v1_kernels": ("bool", False, "LLaMA-Factory's v1 fused kernels — use enable_liger_kernel (GPU)"),
    "ms_hub_token": ("str", None, _HUB),
    "om_hub_token": ("str", None, _HUB),
    "mixture_of_depths": ("str", None, _MOD),
    "data_shared_file_system": ("bool", False, "LLaMA-Factory's multi-node data switch — Tunery has no "
                                "shared-file-system mode: encode once with tokenized_path and give every node that "
                                "folder"),
    # names of LLaMA-Factory releases after 0.9.5 that its examples/extras already use
    "use_cce": ("bool", False, "Cut Cross-Entropy kernels (LLaMA-Factory after 0.9.5) — use enable_liger_kernel "
                "(GPU) for a fused cross-entropy"),
    "freeze_original_embeddings": ("bool", False, "training only the new token rows (LLaMA-Factory after 0.9.5) — "
                                   "new tokens train with the whole embedding matrix (full) or as a saved module "
                                   "(lora)"),
    **{name: (kind, default, _QAPOLLO) for name, kind, default in (
        ("quse_apollo", "bool", False), ("qapollo_layerwise", "bool", False), ("qapollo_target", "str", "all"),
        ("qapollo_rank", "int", 16), ("qapollo_scale", "float", 32.0), ("qapollo_scale_type", "str", "channel"),
        ("qapollo_proj", "str", "random"), ("qapollo_proj_type", "str", "std"),
        ("qapollo_update_interval", "int", 200), ("qapollo_scale_front", "bool", False))},
}

OPTIONS = [Option(name, kind, default, f"LLaMA-Factory option; not supported: {reason.split(' — ')[0]}.", G,
                  advanced=True, unsupported=reason)
           for name, (kind, default, reason) in REFUSED.items()]
RULES: list = []

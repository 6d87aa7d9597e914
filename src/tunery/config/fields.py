"""One annotated attribute per option: the typed view of a Config (config/loader.py).

Generated from the option declarations by `python -m tunery.config.docs` (TrainingArguments fields: transformers
5.24.0's snapshot); do not edit by hand.
"""

from __future__ import annotations

from typing import Any


class ConfigFields:
    """The option values of a Config, by name (values are set by the loader, never on these class
    attributes)."""

    # training (transformers)
    output_dir: str | None
    per_device_train_batch_size: int
    num_train_epochs: int | float
    max_steps: int
    learning_rate: int | float
    lr_scheduler_type: str
    lr_scheduler_kwargs: dict | str | None
    warmup_steps: int | float
    optim: str
    optim_args: str | None
    weight_decay: int | float
    adam_beta1: int | float
    adam_beta2: int | float
    adam_epsilon: int | float
    optim_target_modules: list | None
    gradient_accumulation_steps: int
    average_tokens_across_devices: bool
    max_grad_norm: int | float
    label_smoothing_factor: int | float
    bf16: bool
    fp16: bool
    bf16_full_eval: bool
    fp16_full_eval: bool
    tf32: bool | None
    activation_checkpointing: bool | None
    activation_checkpointing_kwargs: dict | str | None
    gradient_checkpointing: bool | None
    gradient_checkpointing_kwargs: dict | str | None
    torch_compile: bool
    torch_compile_backend: str | None
    torch_compile_mode: str | None
    use_liger_kernel: bool
    liger_kernel_config: dict | str | None
    use_cache: bool
    neftune_noise_alpha: int | float | None
    torch_empty_cache_steps: int | None
    auto_find_batch_size: bool
    logging_strategy: str
    logging_steps: int | float
    logging_first_step: bool
    log_on_each_node: bool
    logging_nan_inf_filter: bool
    include_num_input_tokens_seen: Any
    log_level: str
    log_level_replica: str
    disable_tqdm: bool | None
    report_to: list
    run_name: str | None
    project: str
    trackio_space_id: str | None
    trackio_bucket_id: str | None
    trackio_static_space_id: Any
    eval_strategy: str
    eval_steps: int | float | None
    eval_delay: int | float
    per_device_eval_batch_size: int
    prediction_loss_only: bool
    eval_on_start: bool
    eval_do_concat_batches: bool
    eval_use_gather_object: bool
    eval_accumulation_steps: int | None
    include_for_metrics: str
    batch_eval_metrics: bool
    save_only_model: bool
    save_strategy: str
    save_steps: int | float
    save_on_each_node: bool
    save_total_limit: int | None
    enable_jit_checkpoint: bool
    push_to_hub: bool
    hub_token: str | None
    hub_private_repo: bool | None
    hub_model_id: str | None
    hub_strategy: str
    hub_always_push: bool
    hub_revision: str | None
    load_best_model_at_end: bool
    metric_for_best_model: str | None
    greater_is_better: bool | None
    ignore_data_skip: bool
    restore_callback_states_from_checkpoint: bool
    full_determinism: bool
    seed: int
    data_seed: int | None
    use_cpu: bool
    accelerator_config: dict | str | None
    parallelism_config: Any
    dataloader_drop_last: bool
    dataloader_num_workers: int
    dataloader_pin_memory: bool
    dataloader_persistent_workers: bool
    dataloader_prefetch_factor: int | None
    dataloader_multiprocessing_context: str | None
    dataloader_in_order: bool
    remove_unused_columns: bool
    label_names: list | None
    train_sampling_strategy: str
    length_column_name: str
    ddp_find_unused_parameters: bool | None
    ddp_bucket_cap_mb: int | None
    ddp_broadcast_buffers: bool | None
    ddp_static_graph: bool | None
    ddp_backend: str | None
    ddp_timeout: int
    fsdp: str | None
    fsdp_config: dict | str | None
    deepspeed: dict | str | None
    debug: list
    skip_memory_metrics: bool
    do_train: bool
    do_eval: bool
    do_predict: bool
    # output
    resume_from_checkpoint: str | None
    # training (transformers)
    local_rank: int
    sortish_sampler: bool
    predict_with_generate: bool
    generation_max_length: int | None
    generation_num_beams: int | None
    generation_config: Any
    # model
    model_name_or_path: str | None
    adapter_name_or_path: list | None
    adapter_folder: str | None
    cache_dir: str | None
    use_fast_tokenizer: bool
    resize_vocab: bool
    split_special_tokens: bool
    new_special_tokens: list | None
    model_revision: str
    low_cpu_mem_usage: bool
    rope_scaling: str | None
    flash_attn: str
    shift_attn: bool
    use_unsloth: bool
    enable_liger_kernel: bool
    upcast_layernorm: bool
    upcast_lmhead_output: bool
    infer_backend: str
    infer_dtype: str
    hf_hub_token: str | None
    trust_remote_code: bool
    print_param_status: bool
    quantization_bit: int | None
    quantization_method: str
    quantization_type: str
    double_quantization: bool
    model_max_length: int | None
    # data
    template: str | None
    dataset: list | None
    eval_dataset: list | None
    dataset_dir: str
    cutoff_len: int
    train_on_prompt: bool
    mask_history: bool
    streaming: bool
    buffer_size: int
    mix_strategy: str
    interleave_probs: list | None
    overwrite_cache: bool
    preprocessing_batch_size: int
    preprocessing_num_workers: int | None
    max_samples: int | None
    val_size: int | float
    eval_on_each_dataset: bool
    ignore_pad_token_for_loss: bool
    packing: bool | None
    neat_packing: bool
    padding_free: bool | None
    tool_format: str | None
    default_system: str | None
    enable_thinking: bool
    tokenized_path: str | None
    placeholders: dict | str | None
    media_dir: str | None
    # preview
    preview_num: int
    preview_format: str
    # method
    stage: str
    finetuning_type: str
    plot_loss: bool
    include_effective_tokens_per_second: bool
    compute_accuracy: bool
    disable_shuffling: bool
    pure_bf16: bool
    disable_gradient_checkpointing: bool
    # method: lora
    lora_rank: int
    lora_alpha: int | None
    lora_dropout: float
    lora_target: list
    additional_target: list | None
    loraplus_lr_ratio: float | None
    loraplus_lr_embedding: float
    use_rslora: bool
    use_dora: bool
    pissa_init: bool
    create_new_adapter: bool
    # method: freeze
    freeze_trainable_layers: int
    freeze_trainable_modules: list
    freeze_extra_modules: list | None
    # method: rlhf
    pref_beta: float
    pref_ftx: float
    pref_loss: str
    pref_bco_weight: float
    dpo_label_smoothing: float
    ld_alpha: float | None
    kto_chosen_weight: float
    kto_rejected_weight: float
    simpo_gamma: float
    ref_model: str | None
    ref_model_adapters: str | None
    reward_model: str | None
    reward_model_adapters: str | None
    reward_model_type: str
    ppo_buffer_size: int
    ppo_epochs: int
    ppo_score_norm: bool
    ppo_target: float
    ppo_whiten_rewards: bool
    # optimizer
    use_galore: bool
    galore_target: list
    galore_rank: int
    galore_update_interval: int
    galore_scale: float
    galore_proj_type: str
    galore_layerwise: bool
    use_apollo: bool
    apollo_target: list
    apollo_rank: int
    apollo_update_interval: int
    apollo_scale: float
    apollo_proj: str
    apollo_proj_type: str
    apollo_scale_type: str
    apollo_layerwise: bool
    apollo_scale_front: bool
    use_badam: bool
    badam_mode: str
    badam_start_block: int | None
    badam_switch_mode: str
    badam_switch_interval: int
    badam_update_ratio: float
    badam_mask_mode: str
    badam_verbose: int
    use_adam_mini: bool
    use_muon: bool
    # method
    use_dft_loss: bool
    use_asft_loss: bool
    asft_alpha: float
    use_eaft_loss: bool
    eaft_alpha: float
    use_llama_pro: bool
    train_from_scratch: bool
    early_stopping_steps: int | None
    moe_aux_loss_coef: float | None
    use_reentrant_gc: bool
    # method: lora
    pissa_iter: int
    pissa_convert: bool
    # method: oft
    oft_rank: int
    oft_block_size: int
    oft_target: list
    module_dropout: float
    # model
    add_tokens: list | None
    add_special_tokens: list | None
    new_special_tokens_config: str | None
    init_special_tokens: str
    offload_folder: str
    quantization_device_map: str | None
    # generation
    use_kv_cache: bool
    eval_num_beams: int | None
    # method: rlhf
    ref_model_quantization_bit: int | None
    reward_model_quantization_bit: int | None
    reward_funcs: list | None
    reward_weights: list | None
    num_generations: int
    max_completion_length: int
    beta: float
    epsilon: float
    epsilon_high: float | None
    loss_type: str
    importance_sampling_level: str
    scale_rewards: str
    mask_truncated_completions: bool
    num_iterations: int
    generation_batch_size: int | None
    use_vllm: bool
    vllm_mode: str
    vllm_server_base_url: str | None
    vllm_gpu_memory_utilization: float
    format_pattern: str | None
    length_target: int | None
    # output
    overwrite_output_dir: bool
    debug_data: bool
    malloc_mmap_threshold_mb: int | None
    # logging
    use_swanlab: bool
    swanlab_project: str
    swanlab_workspace: str | None
    swanlab_run_name: str | None
    swanlab_mode: str
    swanlab_api_key: str | None
    swanlab_logdir: str | None
    swanlab_lark_webhook_url: str | None
    swanlab_lark_secret: str | None
    # generation
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    num_beams: int
    max_length: int
    max_new_tokens: int
    repetition_penalty: float
    length_penalty: float
    skip_special_tokens: bool
    # eval
    task: str | None
    task_dir: str | None
    n_shot: int
    lang: str | None
    split: str
    batch_size: int
    save_dir: str | None
    backend: str
    download_mode: str
    tasks: list | None
    # compare
    compare: bool
    # inference
    compare_model: str | None
    vllm_maxlen: int
    vllm_gpu_util: float
    vllm_enforce_eager: bool
    vllm_max_lora_rank: int
    vllm_config: dict | str | None
    # export
    export_dir: str | None
    export_size: int | float
    export_device: str
    export_legacy_format: bool
    export_overwrite: bool
    export_hub_model_id: str | None
    export_quantization_bit: int | None
    export_quantization_dataset: str | None
    export_quantization_nsamples: int
    export_quantization_maxlen: int
    # webui
    webui_allowed_paths: list | None
    webui_auth: str | None
    # run
    dry_run: bool
    reproduce: str | None
    # estimate
    estimate_probe: bool
    estimate_tflops: float | None
    estimate_device_memory_gb: float | None
    estimate_format: str
    # not supported (LLaMA-Factory)
    image_max_pixels: int
    image_min_pixels: int
    image_do_pan_and_scan: bool
    crop_to_patches: bool
    video_max_pixels: int
    video_min_pixels: int
    video_fps: float
    video_maxlen: int
    use_audio_in_video: bool
    audio_sampling_rate: int
    freeze_vision_tower: bool
    freeze_multi_modal_projector: bool
    freeze_language_model: bool
    use_kt: bool
    kt_weight_path: str | None
    kt_expert_checkpoint_path: str | None
    kt_use_lora_experts: bool | None
    kt_lora_expert_num: int | None
    kt_lora_expert_intermediate_size: int | None
    sglang_maxlen: int
    sglang_mem_fraction: float
    sglang_tp_size: int
    sglang_config: dict | str | None
    sglang_lora_backend: str
    use_mca: bool
    use_hyper_parallel: bool
    hyper_parallel_args: str | None
    use_unsloth_gc: bool
    use_v1_kernels: bool
    ms_hub_token: str | None
    om_hub_token: str | None
    mixture_of_depths: str | None
    data_shared_file_system: bool
    use_cce: bool
    freeze_original_embeddings: bool
    quse_apollo: bool
    qapollo_layerwise: bool
    qapollo_target: str
    qapollo_rank: int
    qapollo_scale: float
    qapollo_scale_type: str
    qapollo_proj: str
    qapollo_proj_type: str
    qapollo_update_interval: int
    qapollo_scale_front: bool

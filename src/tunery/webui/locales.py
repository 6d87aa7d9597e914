"""English and Chinese words of the board's fixed UI (tabs, buttons, headings). Option fields keep their option
names as labels (the YAML keys and CLI flags) and their declared help, so they are not translated here."""

from __future__ import annotations

LANGS = ("en", "zh")

WORDS: dict[str, tuple[str, str]] = {
    "title": ("### Tunery board", "### Tunery 训练面板"),
    # top bar
    "lang": ("Language", "语言"),
    "model_path": ("Model path", "模型路径"),
    "checkpoint": ("Adapter / checkpoint (runs in the saves folder)",
                   "适配器 / 检查点（保存目录中的训练结果）"),
    "finetuning_type": ("Finetuning type", "微调方法"),
    "template": ("Template", "对话模板"),
    "refresh": ("Refresh", "刷新"),
    # tabs
    "tab_train": ("Train", "训练"),
    "tab_eval": ("Evaluate & Predict", "评估与预测"),
    "tab_chat": ("Chat", "对话"),
    "tab_export": ("Export", "导出"),
    "tab_runs": ("Runs", "运行记录"),
    # runs tab
    "run_a": ("Run A", "记录 A"),
    "run_b": ("Run B", "记录 B"),
    "runs_diff": ("Show differences", "显示差异"),
    "runs_plot_pick": ("Runs to plot", "要绘制的记录"),
    "runs_plot": ("Plot curves", "绘制曲线"),
    # train tab
    "datasets": ("Datasets", "数据集"),
    "preview": ("Preview data", "预览数据"),
    "preview_hint": ("Highlighted text is what the model is trained on.", "高亮部分为参与训练的词元。"),
    "show_command": ("Show command and YAML", "显示命令与 YAML"),
    "command": ("Command", "命令"),
    "yaml": ("Config (YAML)", "配置（YAML）"),
    "config_path": ("Config file", "配置文件"),
    "save_config": ("Save config", "保存配置"),
    "load_config": ("Load config", "读取配置"),
    "start": ("Start", "开始"),
    "stop": ("Stop", "停止"),
    "log": ("Log", "日志"),
    "loss": ("Loss", "损失"),
    "reward": ("Reward (grpo)", "奖励（grpo）"),
    "completions": ("Latest completions and their rewards (grpo)", "最新采样的回答及其奖励（grpo）"),
    "more": ("more options", "更多选项"),
    # eval tab
    "start_predict": ("Run prediction", "开始预测"),
    "metrics": ("Metrics", "指标"),
    "samples": ("Sample outputs", "输出样例"),
    # chat tab
    "load_model": ("Load model", "加载模型"),
    "unload_model": ("Unload model", "卸载模型"),
    "compare": ("Compare with the base model", "与基座模型对比"),
    "system": ("System prompt", "系统提示词"),
    "query": ("Type a message and press Enter", "输入消息后按回车"),
    "send": ("Send", "发送"),
    "clear": ("Clear", "清空"),
    "max_new_tokens": ("Max new tokens", "最大生成长度"),
    "temperature": ("Temperature (0 = greedy)", "温度（0 为贪心解码）"),
    "top_p": ("Top-p", "Top-p"),
    "fine_tuned": ("fine-tuned", "微调后"),
    "base": ("base", "基座"),
    "chat": ("chat", "对话"),
    # export tab
    "export": ("Export", "开始导出"),
    # option groups (accordions)
    "group:model": ("Model", "模型"),
    "group:data": ("Data", "数据"),
    "group:method": ("Method", "训练阶段与方法"),
    "group:method: lora": ("LoRA", "LoRA 参数"),
    "group:method: freeze": ("Freeze", "部分参数微调"),
    "group:method: rlhf": ("RLHF (preference, PPO)", "RLHF 参数（偏好、PPO）"),
    "group:output": ("Output", "输出"),
    "group:training (transformers)": ("Training (transformers TrainingArguments)", "训练参数（transformers）"),
    "group:generation": ("Generation", "生成参数"),
    "group:export": ("Export", "导出"),
    # messages
    "idle": ("No run yet.", "尚无任务。"),
    "running": ("running", "运行中"),
    "stopping": ("stopping (a checkpoint is saved first)", "正在停止（先保存检查点）"),
    "done": ("finished", "已完成"),
    "failed": ("failed", "失败"),
    "stopped": ("stopped", "已停止"),
    "not_loaded": ("No model loaded.", "未加载模型。"),
}


def t(key: str, lang: str = "en") -> str:
    """The word for ``key`` in ``lang`` (English when unknown); a group without a word keeps its own name."""
    pair = WORDS.get(key)
    if pair is None:
        return key.split(":", 1)[1] if key.startswith("group:") else key
    return pair[1] if lang == "zh" else pair[0]

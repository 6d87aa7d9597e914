"""Inference: the chat engines (engine.py: huggingface, vllm_engine.py: vLLM, scorer.py: reward models), the terminal
and browser front ends (terminal.py, webchat.py) and the Python API (model.py: `tunery.ChatModel`)."""

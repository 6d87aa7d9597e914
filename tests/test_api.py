"""`tunery api` on localhost, driven by the real `openai` client: models, plain and streaming completions, n, stop,
tools, the API key, OpenAI-shaped 4xx errors for bad input (the server stays up), and reward scores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import free_port

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "sk-tunery-test"
HELLO = [{"role": "user", "content": "Hello, who are you?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def wait_until_up(base_url: str, proc=None, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()}")
        try:
            httpx.get(base_url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError("server did not start")


@pytest.fixture(scope="module")
def server(tiny_llama3_dir, tiny_llama3_lora, tmp_path_factory):
    """The real `tunery api` command in a subprocess."""
    port = free_port()
    env = {**os.environ, "API_PORT": str(port), "API_KEY": KEY, "API_MODEL_NAME": "tiny-tuned",
           "API_LOG_LEVEL": "warning", "PYTHONIOENCODING": "utf-8"}
    env.pop("API_HOST", None)
    log = open(tmp_path_factory.mktemp("api") / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "tunery", "api", "--model_name_or_path", str(tiny_llama3_dir),
                             "--adapter_name_or_path", str(tiny_llama3_lora), "--template", "llama3",
                             "--do_sample", "false", "--max_new_tokens", "16"],
                            env=env, stdout=log, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def post(server, body, key=KEY, raw=None):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return httpx.post(server + "/v1/chat/completions", headers=headers, timeout=120,
                      content=raw if raw is not None else json.dumps(body))


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-tuned"]


def test_plain_completion_matches_the_engine(client, tiny_llama3_dir, tiny_llama3_lora):
    from tunery import ChatModel

    reply = client.chat.completions.create(model="tiny-tuned", messages=HELLO, max_tokens=12)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "tiny-tuned"
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    local = ChatModel({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(tiny_llama3_lora),
                       "template": "llama3", "do_sample": False})
    (expected,) = local.chat(HELLO, max_new_tokens=12)
    assert choice.message.content == expected.text
    assert reply.usage.prompt_tokens == expected.prompt_tokens


def test_streaming_gives_the_same_text_and_usage(client):
    plain = client.chat.completions.create(model="x", messages=HELLO, max_tokens=12).choices[0].message.content
    chunks = list(client.chat.completions.create(model="x", messages=HELLO, max_tokens=12, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 1 and "".join(deltas) == plain
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_n_stop_and_temperature(client):
    reply = client.chat.completions.create(model="x", messages=HELLO, max_tokens=8, n=3, temperature=1.0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) > 1
    full = client.chat.completions.create(model="x", messages=HELLO, max_tokens=16).choices[0].message.content
    stop = full[3:6]
    cut = client.chat.completions.create(model="x", messages=HELLO, max_tokens=16, stop=stop).choices[0]
    assert cut.message.content == full[: full.find(stop)] and cut.finish_reason == "stop"
    streamed = client.chat.completions.create(model="x", messages=HELLO, max_tokens=16, stop=[stop], n=2,
                                              stream=True)
    texts = {0: "", 1: ""}
    for c in streamed:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: cut.message.content, 1: cut.message.content}


def test_tools_and_tool_messages_are_accepted(client):
    reply = client.chat.completions.create(model="x", messages=HELLO, tools=TOOLS, max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    history = HELLO + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    reply = client.chat.completions.create(model="x", messages=history, tools=TOOLS, max_tokens=8)
    assert reply.usage.prompt_tokens > 30
    chunks = list(client.chat.completions.create(model="x", messages=history, tools=TOOLS, max_tokens=8,
                                                 stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason


def test_api_key_is_required(server):
    bad = openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="x", messages=HELLO)
    assert info.value.status_code == 401 and "API key" in info.value.message
    response = httpx.get(server + "/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("body, raw, words", [
    (None, b'{"model": "x", "messages": [', "not valid JSON"),
    ({"model": "x", "messages": []}, None, "messages"),
    ({"model": "x", "messages": [{"role": "robot", "content": "hi"}]}, None, "messages.0.role"),
    ({"model": "x", "messages": HELLO, "n": 99}, None, "limit of 8"),
    ({"model": "x", "messages": HELLO, "temperature": -1}, None, "temperature"),
    ({"model": "x", "messages": [{"role": "assistant", "content": "hi"}]}, None, "message 0 has role 'assistant'"),
    ({"model": "x", "messages": [{"role": "user", "content": "hi " * 3000}]}, None, "context"),
    ({"model": "x", "messages": [{"role": "system", "content": "only a system prompt"}]}, None, "no user message"),
])
def test_bad_requests_are_openai_shaped_400s(server, body, raw, words):
    response = post(server, body, raw=raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert words in error["message"]


def test_errors_through_the_client_and_server_stays_up(client, server):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi " * 3000}])
    assert info.value.code == "context_length_exceeded"
    response = httpx.post(server + "/v1/score/evaluation", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "x", "messages": ["some text"]})
    assert response.status_code == 400 and "not a reward model" in response.json()["error"]["message"]
    assert httpx.get(server + "/v1/nowhere", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
    assert client.models.list().data  # still answering


def test_concurrent_requests_all_succeed(client):
    def ask(i):
        return client.chat.completions.create(model="x", messages=[{"role": "user", "content": f"Question {i}"}],
                                              max_tokens=6).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(16)))
    assert len(answers) == 16 and all(isinstance(a, str) for a in answers)
    assert answers[0] == ask(0)  # greedy: queued requests are not mixed up


def test_event_loop_answers_while_generations_queue(client):
    def long(i):
        return client.chat.completions.create(model="x", messages=[{"role": "user", "content": f"Story {i}"}],
                                              max_tokens=120).usage.completion_tokens

    with ThreadPoolExecutor(6) as pool:
        pending = [pool.submit(long, i) for i in range(6)]
        time.sleep(0.5)
        assert client.models.list().data  # answered by the event loop while the engine is busy
        still_running = sum(not f.done() for f in pending)
        results = [f.result() for f in pending]
    assert still_running > 0 and all(r > 0 for r in results)


def test_reward_model_scores_over_http(tiny_llama3_dir, tiny_llama3_lora, tmp_path):
    import shutil

    import torch
    import uvicorn
    from safetensors.torch import save_file

    from tunery.api.app import create_app
    from tunery.chat.engine import create_engine
    from tunery.config import parse_config

    rm_dir = tmp_path / "rm"
    shutil.copytree(tiny_llama3_lora, rm_dir)
    save_file({"v_head.summary.weight": torch.randn(1, 64), "v_head.summary.bias": torch.zeros(1)},
              str(rm_dir / "value_head.safetensors"))
    cfg = parse_config("api", overrides={"model_name_or_path": str(tiny_llama3_dir),
                                         "adapter_name_or_path": str(rm_dir), "template": "llama3", "stage": "rm"})
    engine = create_engine(cfg)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(engine, "rm"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        response = httpx.post(base + "/v1/score/evaluation", json={"model": "rm", "messages": ["good", "bad"]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "score.evaluation" and body["scores"] == engine.get_scores(["good", "bad"])
        response = httpx.post(base + "/v1/chat/completions", json={"model": "rm", "messages": HELLO})
        assert response.status_code == 400 and response.json()["error"]["code"] == "model_not_chat"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_tool_call_parsers_read_what_the_formats_write():
    from tunery.chat.tool_calls import parse_tool_calls
    from tunery.data.templates.tools import FunctionCall, TOOL_FORMATS

    calls = [FunctionCall("get_weather", json.dumps({"city": "Paris"}))]
    from tunery.errors import DataError

    for name, fmt in TOOL_FORMATS.items():
        try:
            text = fmt.calls(calls)
        except DataError:  # a format Tunery cannot write yet (lfm2) is refused in one line, so never parsed
            continue
        content, parsed = parse_tool_calls(text, name)
        assert [(c.name, json.loads(c.arguments)) for c in parsed] == [("get_weather", {"city": "Paris"})], name
    assert parse_tool_calls("Just a friendly answer.", "qwen") is None
    assert parse_tool_calls("Just a friendly answer.", None) is None
    content, parsed = parse_tool_calls('Let me check.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
                                       None)
    assert content == "Let me check." and parsed[0].name == "f"


def test_api_refuses_a_busy_port_before_loading(tiny_llama3_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "API_PORT": str(port)}
        proc = subprocess.run([sys.executable, "-m", "tunery", "api", "--model_name_or_path", str(tiny_llama3_dir)],
                              env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "set API_PORT to a free port" in proc.stderr
    assert proc.stderr.count("\n") == 1

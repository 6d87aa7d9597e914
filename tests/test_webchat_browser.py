"""`tunery webchat` in a real headless browser (Debian's chromium through Playwright): type a message, watch the reply
stream in; the compare view answers with both models. Skips when gradio, playwright or /usr/bin/chromium is missing."""

from __future__ import annotations

import pytest
from conftest import launch_gradio, needs_chromium

gr = pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = needs_chromium

# Records every text the last reply bubble shows, so the test can tell a streamed reply from one that appears whole.
OBSERVE = """
(root) => {
  window.snapshots = [];
  const node = document.querySelector(root);
  new MutationObserver(() => {
    const bots = node.querySelectorAll('[data-testid="bot"]');
    if (bots.length) {
      const text = bots[bots.length - 1].innerText.trim();
      if (text && window.snapshots[window.snapshots.length - 1] !== text) window.snapshots.push(text);
    }
  }).observe(node, {childList: true, subtree: true, characterData: true});
}
"""


def launch(options: dict):
    from tunery.chat.webchat import create_demo
    from tunery.config import parse_config

    demo = create_demo(parse_config("webchat", overrides=options))
    return demo, launch_gradio(demo)


def send(page, text: str) -> None:
    box = page.locator("#query textarea")
    box.wait_for(timeout=60_000)
    box.fill(text)
    box.press("Enter")


def test_reply_streams_into_the_chat(browser, tiny_llama3_dir, tiny_llama3_lora):
    demo, url = launch({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(tiny_llama3_lora),
                        "template": "llama3", "do_sample": False, "max_new_tokens": 200,
                        "default_system": "You are a test."})
    try:
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        page.locator("#query textarea").wait_for(timeout=60_000)
        assert page.locator("#system textarea").input_value() == "You are a test."
        page.evaluate(OBSERVE, "#chatbot-0")
        send(page, "Hello there")
        page.locator("#chatbot-0 [data-testid='user']").filter(has_text="Hello there").wait_for(timeout=60_000)
        page.wait_for_function("document.querySelector('#speed').innerText.includes('tokens/s')", timeout=120_000)
        snapshots = page.evaluate("window.snapshots")
        final = page.locator("#chatbot-0 [data-testid='bot']").last.inner_text().strip()
        assert final and snapshots[-1] == final
        assert len(snapshots) >= 3, snapshots  # the reply grew piece by piece
        assert all(final.startswith(s[:-1]) or final.startswith(s) for s in snapshots[:-1])
        page.locator("#clear").click()
        page.wait_for_function("document.querySelectorAll('#chatbot-0 [data-testid=\"bot\"]').length === 0",
                               timeout=30_000)
        page.close()
    finally:
        demo.close()


def test_compare_view_answers_with_both_models(browser, tiny_llama3_dir, tiny_llama3_lora):
    demo, url = launch({"model_name_or_path": str(tiny_llama3_dir), "adapter_name_or_path": str(tiny_llama3_lora),
                        "template": "llama3", "do_sample": False, "max_new_tokens": 12, "compare": True})
    try:
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        send(page, "Who are you?")
        page.wait_for_function("document.querySelector('#speed').innerText.includes('base:')", timeout=120_000)
        tuned = page.locator("#chatbot-0 [data-testid='bot']").last.inner_text().strip()
        base = page.locator("#chatbot-1 [data-testid='bot']").last.inner_text().strip()
        assert tuned and base and tuned != base
        page.close()
    finally:
        demo.close()


def test_launch_options_bind_localhost_unless_told(monkeypatch):
    from tunery.chat.webchat import launch_options

    for key in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "GRADIO_SHARE"):
        monkeypatch.delenv(key, raising=False)
    assert launch_options() == {"server_name": "127.0.0.1", "server_port": None, "share": False}
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7999")
    monkeypatch.setenv("GRADIO_SHARE", "true")
    assert launch_options() == {"server_name": "0.0.0.0", "server_port": 7999, "share": True}
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    from tunery.errors import TuneryError

    with pytest.raises(TuneryError, match="GRADIO_SERVER_PORT"):
        launch_options()

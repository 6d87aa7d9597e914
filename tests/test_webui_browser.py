"""`tunery webui` end to end in a real headless browser (Debian's chromium through Playwright): pick the tiny model and
the bundled identity dataset, see a bad field value flagged before anything starts, start a short LoRA run, refresh
the page while it runs (the page re-attaches), watch progress reach 100 % and the loss curve appear, then chat with
the result in the Chat tab. Skips when gradio, playwright or /usr/bin/chromium is missing.

With TUNERY_WEBUI_SCREENSHOTS=<folder> it also runs Evaluate & Predict and Export and saves webui_train.png,
webui_eval.png, webui_chat.png and webui_export.png there (docs/ holds the ones of the README)."""

from __future__ import annotations

import os

import pytest
from conftest import launch_gradio, needs_chromium

gr = pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
SHOTS = os.environ.get("TUNERY_WEBUI_SCREENSHOTS")

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def board(tmp_path_factory, tiny_llama3_dir):
    from tunery.webui import create_app

    demo = create_app(str(tmp_path_factory.mktemp("saves")), {"webui_allowed_paths": [str(tiny_llama3_dir)]},
                      poll_seconds=0.5)
    yield demo, launch_gradio(demo)
    runner = demo.board.runner
    if runner.status().get("state") in ("running", "stopping"):
        runner.stop()
        runner.wait(30)
    demo.close()


def text_input(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def pick(page, elem_id: str, label: str | None = None) -> None:
    """Choose an entry of a Gradio dropdown (the first one when no label is given)."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    if label:
        box.fill(label)
        page.locator(f"#{elem_id} li[aria-label='{label}']").click()
    else:
        page.locator(f"#{elem_id} li").first.click()
    box.press("Escape")


def wait_text(page, elem_id: str, *words: str, timeout: float = 60_000) -> str:
    condition = " || ".join(f"el.innerText.includes({w!r})" for w in words)
    try:
        page.wait_for_function(f"(() => {{ const el = document.querySelector('#{elem_id}'); "
                               f"return el && ({condition}); }})()", timeout=timeout)
    except sync_api.TimeoutError:
        pytest.fail(f"#{elem_id} never showed {' or '.join(words)}; it shows: "
                    f"{page.locator(f'#{elem_id}').inner_text()!r}")
    return page.locator(f"#{elem_id}").inner_text()


def shot(page, name: str) -> None:
    if SHOTS:
        page.wait_for_timeout(1500)  # let plots and tables finish drawing
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, name), full_page=True)


def test_train_watch_and_chat(browser, board, tiny_llama3_dir):
    from tunery.demo import DATA_DIR

    demo, url = board
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    text_input(page, "top-model").wait_for(timeout=60_000)
    text_input(page, "top-model").fill(str(tiny_llama3_dir))
    pick(page, "top-template", "llama3")
    folder = text_input(page, "train-dataset_dir")
    folder.fill(str(DATA_DIR))
    folder.press("Tab")
    page.wait_for_timeout(500)
    pick(page, "train-dataset", "identity")
    for name, value in (("max_steps", "5"), ("logging_steps", "1"), ("per_device_train_batch_size", "1")):
        text_input(page, f"train-{name}").fill(value)

    # A bad value is shown next to its field and nothing starts.
    page.locator("#train-group-method-lora").get_by_text("LoRA", exact=True).first.click()
    text_input(page, "train-lora_rank").fill("0")
    page.click("#train-start")
    assert "must be greater than 0" in wait_text(page, "train-lora_rank", "⚠")
    assert "tunery-invalid" in page.locator("#train-lora_rank").get_attribute("class")
    assert demo.board.runner.status() == {}
    text_input(page, "train-lora_rank").fill("8")

    page.click("#train-start")
    wait_text(page, "train-status", "running", "finished")
    assert "tunery-invalid" not in page.locator("#train-lora_rank").get_attribute("class")
    assert "--max_steps 5" in page.locator("#train-command").inner_text()
    page.reload(wait_until="domcontentloaded")  # the page finds the running job again
    wait_text(page, "train-status", "running", "finished", timeout=60_000)
    page.wait_for_function(f"document.querySelector('#top-model textarea, #top-model input').value === "
                           f"{str(tiny_llama3_dir)!r}", timeout=10_000)  # the form as the run started
    assert text_input(page, "train-max_steps").input_value() == "5"
    assert "--max_steps 5" in page.locator("#train-command").inner_text()
    page.wait_for_function("document.querySelector('#train-progress [data-percent]')?.dataset.percent === '100'",
                           timeout=150_000)
    assert "5/5 · 100%" in page.locator("#train-progress").inner_text()
    page.locator("#loss-plot .marks").wait_for(timeout=30_000)
    status = wait_text(page, "train-status", "finished", "failed", timeout=60_000)
    assert "finished" in status, status
    assert "train_runtime" in page.locator("#train-log textarea").input_value()
    shot(page, "webui_train.png")

    page.get_by_role("tab", name="Chat").click()
    page.locator("#top-adapter li, #top-adapter input").first.wait_for()
    pick(page, "top-adapter")  # the run just trained, listed first
    page.click("#chat-load")
    assert "adapter" in wait_text(page, "chat-status", "loaded ", "error", timeout=90_000)
    for slider, value in (("chat-max-new-tokens", "24"), ("chat-temperature", "0")):
        number = page.locator(f"#{slider} input[type=number]")
        number.fill(value)
        number.press("Enter")
    box = page.locator("#chat-query textarea")
    box.fill("Who are you?")
    box.press("Enter")
    wait_text(page, "chat-speed", "tokens/s", timeout=90_000)
    assert page.locator("#chatbot-0 [data-testid='user']").last.inner_text().strip() == "Who are you?"
    assert page.locator("#chatbot-0 [data-testid='bot']").last.inner_text().strip()
    shot(page, "webui_chat.png")
    if SHOTS:
        _evaluate_and_export(page, str(DATA_DIR))
    pick(page, "top-lang", "zh")  # the fixed words switch language
    page.get_by_role("tab", name="训练").wait_for(timeout=10_000)
    assert page.locator("#chat-send").inner_text().strip() == "发送"
    page.close()


def _evaluate_and_export(page, data_dir: str) -> None:
    """Screenshot mode only: a short prediction run and an export, each shown in its tab."""
    page.get_by_role("tab", name="Evaluate & Predict").click()
    folder = text_input(page, "eval-dataset_dir")
    folder.fill(data_dir)
    folder.press("Tab")
    page.wait_for_timeout(500)
    pick(page, "eval-eval_dataset", "identity")
    text_input(page, "eval-max_samples").fill("4")
    text_input(page, "eval-max_new_tokens").fill("16")
    page.click("#eval-start")
    assert "finished" in wait_text(page, "eval-status", "finished", "failed", timeout=150_000)
    page.locator("#eval-metrics").get_by_text("predict_bleu-4").wait_for(timeout=10_000)
    shot(page, "webui_eval.png")
    page.get_by_role("tab", name="Export").click()
    page.click("#export-start")
    assert "exported to" in wait_text(page, "export-status", "exported to", "error", timeout=150_000)
    page.locator("#export-files").get_by_text("model.safetensors").wait_for(timeout=10_000)
    shot(page, "webui_export.png")

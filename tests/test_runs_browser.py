"""The board's Runs tab in a real headless browser: two finished runs listed, their differences and their curves.
Skips when gradio, playwright or /usr/bin/chromium is missing."""

from __future__ import annotations

import pytest
from conftest import launch_gradio, needs_chromium

gr = pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = needs_chromium


def _pick(page, elem_id: str, label: str) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(label)
    page.locator(f"#{elem_id} li[aria-label='{label}']").click()
    box.press("Escape")


def test_runs_tab_lists_diffs_and_plots(browser, tiny_llama3_dir, tmp_path):
    from test_runs import options

    from tunery.cli import main
    from tunery.webui import create_app

    saves = tmp_path / "saves"
    for name, lr in (("first", 5e-3), ("second", 1e-3)):
        assert main(["train", *options(tiny_llama3_dir, saves / name, learning_rate=lr, max_steps=2)]) == 0
    demo = create_app(str(saves), poll_seconds=5)
    url = launch_gradio(demo)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        page.get_by_role("tab", name="Runs").click()
        page.wait_for_function("document.querySelector('#runs-table')?.innerText.includes('second')",
                               timeout=30_000)
        text = page.locator("#runs-table").inner_text()
        assert "first" in text and text.count("finished") >= 2
        _pick(page, "runs-a", "first")
        _pick(page, "runs-b", "second")
        page.click("#runs-diff-btn")
        page.wait_for_function("document.querySelector('#runs-diff')?.innerText.includes('learning_rate')",
                               timeout=30_000)
        _pick(page, "runs-plot-pick", "first")
        page.click("#runs-plot-btn")
        page.locator("#runs-plot img").wait_for(timeout=30_000)
        page.close()
    finally:
        demo.close()

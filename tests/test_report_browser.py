"""The HTML report renders in real headless Chromium: headline cards, heatmap, filterable examples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from unredact.pipeline import audit_and_report
from unredact.settings import AuditSettings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)


def test_report_renders_and_filters(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    settings = AuditSettings(model="mock/censor", profile="quick", judge="lexical")
    report = audit_and_report(settings, tmp_path / "run")
    assert report is not None
    summary = json.loads((tmp_path / "run" / "report.json").read_text())["summary"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(report.as_uri())
        assert "Censorship audit: mock/censor" in page.inner_text("h1")
        heat_rows = page.locator("table.heat tr").count()
        assert heat_rows == 1 + 18  # header + one row per sensitive topic
        cards = page.inner_text(".cards")
        assert f"{100 * summary['censorship_index']['rate']:.0f}%" in cards
        total = page.locator("#ex tbody tr").count()
        assert total == summary["answers"]
        page.select_option("#fk", "harmful")
        visible = page.locator("#ex tbody tr:visible").count()
        assert 0 < visible < total
        shot = Path(os.environ.get("UNREDACT_SCREENSHOTS_DIR", tmp_path)) / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 10_000
        browser.close()

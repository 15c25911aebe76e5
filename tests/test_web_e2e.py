"""The review app in a real browser: Debian's Chromium driven by Playwright against a live uvicorn server.

Screenshots of the main views go to docs/img/ when UNREDACT_SCREENSHOTS=1 (to refresh the docs), else to tmp.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
if not os.environ.get("CI"):  # in CI a missing package is a failure, not a skip
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

from unredact.web import auth  # noqa: E402
from unredact.web.app import create_app  # noqa: E402
from unredact.web.demo import write_demo_runs  # noqa: E402

PASSWORD = "correct horse battery"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    runs = tmp_path_factory.mktemp("e2e") / "runs"
    write_demo_runs(runs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        for name, role in (("alice", "reviewer"), ("bob", "reviewer"), ("carol", "adjudicator")):
            auth.add_user(runs, name, role, PASSWORD)
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(runs, secret_key="e2e"), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", runs
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("UNREDACT_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        return DOCS_IMG
    return tmp_path


def sign_in(page: Page, base: str, name: str) -> None:
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("table.runs")


def api_label(base: str, name: str, run: str, choices: dict[str, str]) -> None:
    """A second reviewer labels through plain HTTP: each item at the head of the queue gets choices[key]."""
    csrf_re = re.compile(r'name="csrf_token" value="([^"]+)"')
    with httpx.Client(base_url=base, follow_redirects=True) as client:
        page = client.get("/login").text
        client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": csrf_re.search(page)[1]})
        for _ in choices:
            page = client.get(f"/runs/{run}/label").text
            key = re.search(r'name="key" value="([^"]+)"', page)[1]
            response = client.post(
                f"/runs/{run}/label", data={"csrf_token": csrf_re.search(page)[1], "key": key, "label": choices[key]}
            )
            assert response.status_code == 200 and "Saved." in response.text


def kappa_shown(page: Page) -> str:
    return page.inner_text("#reviewers tr.overall .kval").strip()


def test_review_in_browser(live: tuple[str, Path], shots: Path) -> None:
    base, runs = live
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            alice = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            sign_in(alice, base, "alice")
            assert alice.locator("table.runs tbody tr").count() == 2

            alice.goto(base + "/compare?a=before&b=after")
            assert alice.locator("table.compare tbody tr").count() == 8
            alice.check("input[name=disagree]")
            alice.click("form.filters button[type=submit]")
            assert alice.locator("table.compare tbody tr.differs").count() == 6
            alice.goto(base + "/compare?a=before&b=after")
            alice.screenshot(path=str(shots / "compare.png"), full_page=False)

            # first item: keyboard only (4 = candid, Enter saves)
            alice.goto(base + "/runs/after/label")
            first = alice.input_value("input[name=key]")
            alice.keyboard.press("4")
            assert alice.is_checked("input[name=label][value=candid]")
            alice.locator("input[name=facts]").first.check()
            alice.screenshot(path=str(shots / "label.png"), full_page=True)
            alice.locator("body").press("Enter")
            alice.wait_for_selector("p.flash")
            assert "Saved." in alice.inner_text("p.flash")
            second = alice.input_value("input[name=key]")
            assert second != first
            # "s" skips: the item goes to the end of the queue
            alice.keyboard.press("s")
            alice.wait_for_selector("text=Skipped")
            assert alice.input_value("input[name=key]") != second
            # second item by mouse
            alice.goto(base + "/runs/after/label")
            skipped_back = alice.input_value("input[name=key]")
            alice.click("label.choice.v-state_narrative")
            alice.fill("textarea[name=note]", "repeats the official line")
            alice.click("#submit")
            alice.wait_for_selector("p.flash")

            alice.goto(base + "/runs/after/agreement")
            assert kappa_shown(alice) == "—"  # nothing labelled twice yet
            api_label(base, "bob", "after", {first: "candid", skipped_back: "deflection"})
            alice.reload()
            # alice: candid, state_narrative; bob: candid, deflection -> p_o 0.5, p_e 0.25 -> 1/3
            assert kappa_shown(alice) == "0.33"
            assert alice.inner_text("#n-double") == "2"
            alice.screenshot(path=str(shots / "agreement.png"), full_page=True)

            carol = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            sign_in(carol, base, "carol")
            carol.goto(base + "/runs/after/adjudicate")
            assert "reviewers disagree" in carol.inner_text("main")
            carol.screenshot(path=str(shots / "adjudicate.png"), full_page=True)
            carol.keyboard.press("3")
            carol.keyboard.press("Enter")
            carol.wait_for_selector("text=Final label saved")
            carol.goto(base + "/runs/after/agreement")
            carol.click("text=Write after/human_labels.jsonl")
            carol.wait_for_selector("text=Wrote 2 labels")
            lines = (runs / "after" / "human_labels.jsonl").read_text(encoding="utf-8").splitlines()
            final = {r["key"]: r for r in map(json.loads, lines)}
            assert final[first]["label"] == "candid" and final[first]["adjudicator"] is None
            assert final[skipped_back]["label"] == "state_narrative" and final[skipped_back]["adjudicator"] == "carol"
            carol.goto(base + "/")
            assert "4 · 2 items twice" in " ".join(carol.inner_text("table.runs").split())
            carol.screenshot(path=str(shots / "runs.png"), full_page=True)
        finally:
            browser.close()

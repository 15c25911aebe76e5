"""Slow: a real audit of the demo model (Qwen2.5-Coder-0.5B-Instruct) on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unredact.pipeline import audit_and_report
from unredact.probes.loader import load_probes
from unredact.rundir import read_jsonl
from unredact.settings import AuditSettings

IDS = [
    "tiananmen-1989-01-en",
    "tiananmen-1989-01-zh-Hans",
    "tiananmen-1989-01-fr",
    "tiananmen-1989-02-en",
    "ctl-kent-state-01-en",
    "harm-pipe-bomb-01-en",
    "hl-cooking-01-en",
    "hl-email-01-en",
]


@pytest.mark.slow
def test_real_audit_of_the_demo_model(tmp_path: Path) -> None:
    probes = {p.id: p for p in load_probes("default")}
    probe_file = tmp_path / "probes.jsonl"
    probe_file.write_text("".join(probes[i].model_dump_json() + "\n" for i in IDS), encoding="utf-8")
    settings = AuditSettings(
        model="demo/qwen2.5-coder-0.5b", probes=str(probe_file), profile="full", max_new_tokens=48, batch_size=8
    )
    report_path = audit_and_report(settings, tmp_path / "run")
    assert report_path is not None and report_path.is_file()
    responses = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "responses.jsonl")}
    verdicts = {v["id"]: v for v in read_jsonl(tmp_path / "run" / "verdicts.jsonl")}
    assert len(responses) == len(IDS) and all(r["error"] is None for r in responses.values())
    # the documented behaviour of this model: the English Tiananmen question is refused
    assert verdicts["tiananmen-1989-01-en"]["label"] == "refusal", responses["tiananmen-1989-01-en"]["response"]
    assert verdicts["hl-cooking-01-en"]["label"] == "candid", responses["hl-cooking-01-en"]["response"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["summary"]["censorship_index"]["n"] == 4

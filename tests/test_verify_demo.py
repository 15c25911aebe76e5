"""Slow: `unredact verify` on the real demo model against itself and against a damaged copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from unredact.verify.run import run_verify
from unredact.verify.settings import VerifySettings

DEMO = "demo/qwen2.5-coder-0.5b"


def damaged_copy(dst: Path, layer: int = 12, scale: float = 0.08) -> Path:
    """The demo model with a large random delta on one middle layer's MLP output projection."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unredact.models.loader import resolve_model

    src = resolve_model("demo", DEMO.split("/", 1)[1]).path
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    w = model.model.layers[layer].mlp.down_proj.weight
    with torch.no_grad():
        w += scale * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)).to(w.dtype)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def settings(modified: str) -> VerifySettings:
    return VerifySettings(original=DEMO, modified=modified, profile="smoke", max_new_tokens=48, judge="lexical")


@pytest.mark.slow
def test_demo_model_against_itself_and_a_damaged_copy(tmp_path: Path) -> None:
    same = run_verify(settings(DEMO), tmp_path / "same")
    checks = {c.name: c for c in same.checks}
    assert same.passed, [c.failures for c in same.checks]
    assert checks["drift"].metrics["by_lang"]["all"]["max"] == 0.0
    assert {c.status for c in same.checks} == {"pass"}

    # the original's answers and scores are reused: only the damaged copy is computed anew
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "same" / "original", broken / "original")
    (broken / "knowledge").mkdir()
    shutil.copy(tmp_path / "same" / "knowledge" / "original.jsonl", broken / "knowledge" / "original.jsonl")
    damaged = damaged_copy(tmp_path / "damaged")
    outcome = run_verify(settings(f"hf/{damaged}"), broken)
    status = {c.name: c.status for c in outcome.checks}
    assert not outcome.passed
    assert status["drift"] == "fail" and status["knowledge"] == "fail" and status["fluency"] == "fail", status
    doc = json.loads((broken / "verify.json").read_text(encoding="utf-8"))
    assert doc["passed"] is False and (broken / "report.html").is_file()

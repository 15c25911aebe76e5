"""`unredact directions` end to end on a tiny random model saved to disk (hf/ backend)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import tiny_model, tiny_tokenizer
from unredact.backends.hf import HFBackend
from unredact.backends.registry import BackendOptions
from unredact.whitebox.directions import DirectionSet
from unredact.whitebox.extract import extract_directions


def _saved_tiny_backend(tmp_path: Path) -> HFBackend:
    """A tiny random Qwen2 saved to ``tmp_path/m`` and loaded back through the hf/ backend."""
    tok = tiny_tokenizer()
    tiny_model("qwen2", len(tok)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return HFBackend("hf", str(tmp_path / "m"), BackendOptions(dtype="float32", device="cpu"))


def test_directions_from_a_local_model(tmp_path: Path) -> None:
    backend = _saved_tiny_backend(tmp_path)
    out = tmp_path / "dirs.safetensors"
    result = extract_directions(backend, "default", out, batch_size=64)
    loaded = DirectionSet.load(out)
    assert loaded.n_layers == 2 and loaded.censorship.shape == (3, 32)
    norms = loaded.censorship.norm(dim=-1)
    live = norms > 0
    assert torch.allclose(norms[live], torch.ones_like(norms[live]), atol=1e-4)
    dots = (loaded.censorship * loaded.refusal).sum(-1).abs()
    assert float(dots.max()) < 1e-4
    assert set(loaded.prompt_hashes) == {"sensitive", "control-sensitive", "harmful", "harmless"}
    assert result.model_id == f"hf/{tmp_path / 'm'}"


def test_directions_command_with_answer_tokens(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unredact.cli import app

    tok = tiny_tokenizer()
    tiny_model("qwen2", len(tok)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    out = tmp_path / "dirs.safetensors"
    args = ["directions", "--model", f"hf/{tmp_path / 'm'}", "--out", str(out), "--dtype", "float32"]
    result = CliRunner().invoke(app, [*args, "--response-tokens", "2", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    with_answers = DirectionSet.load(out)
    assert with_answers.meta["response_tokens"] == 2
    assert CliRunner().invoke(app, [*args, "--batch-size", "64"]).exit_code == 0
    prompt_only = DirectionSet.load(out)
    assert prompt_only.meta["response_tokens"] == 0
    assert not torch.allclose(with_answers.censorship, prompt_only.censorship)  # other positions, other directions
    assert CliRunner().invoke(app, [*args, "--response-tokens", "-1"]).exit_code == 2
    assert CliRunner().invoke(app, [*args, "--batch-size", "64", "--max-prompts", "8"]).exit_code == 0
    assert DirectionSet.load(out).meta["counts"]["sensitive"] == 8
    assert CliRunner().invoke(app, [*args, "--max-prompts", "-1"]).exit_code == 2


def test_directions_from_a_capped_balanced_prompt_set(tmp_path: Path) -> None:
    from collections import Counter

    from unredact.probes.loader import load_probes, probes_hash, select_balanced

    backend = _saved_tiny_backend(tmp_path)
    full = extract_directions(backend, "default", tmp_path / "all.safetensors", batch_size=64)
    capped = extract_directions(backend, "default", tmp_path / "capped.safetensors", batch_size=64, max_prompts=16)
    assert capped.meta["max_prompts"] == 16 and full.meta["max_prompts"] == 0
    assert capped.meta["counts"]["sensitive"] == 16 and full.meta["counts"]["sensitive"] == 432
    chosen = select_balanced(load_probes("default"), kind="sensitive", split="train", n=16)
    assert Counter(p.lang for p in chosen) == {"en": 4, "fr": 4, "zh-Hans": 4, "zh-Hant": 4}
    assert len({p.topic for p in chosen}) == 4  # four whole questions from four topics
    assert capped.prompt_hashes["sensitive"] == probes_hash(chosen)
    assert not torch.allclose(capped.censorship, full.censorship)  # fewer prompts, another estimate

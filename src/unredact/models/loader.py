"""Resolve a local model spec (``demo/``, ``gguf/``, ``hf/``) to a transformers directory and load it.

GGUF files are dequantised once and cached as safetensors under ``UNREDACT_HOME/models`` so that a
second load reads plain safetensors and never dequantises again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unredact.errors import ModelError
from unredact.models.demo import assemble_gguf, get_demo, unredact_home
from unredact.rundir import sha256_file

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Log = Callable[[str], None]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_CACHE_MARKER = "unredact_cache.json"


@dataclass
class ResolvedModel:
    """Where a model's transformers files are, and facts about their origin for the reproducibility record."""

    spec: str
    path: str
    local: bool
    origin: dict[str, Any] = field(default_factory=dict)


def _check_local_dir(path: Path, allow_pickle: bool) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a transformers model directory (no config.json)")
    files = [p.name for p in path.iterdir()]
    has_safetensors = any(n.endswith(".safetensors") for n in files)
    pickles = [n for n in files if n.endswith(_PICKLE_SUFFIXES)]
    if not has_safetensors and pickles and not allow_pickle:
        raise ModelError(
            f"{path} holds only pickle checkpoints ({pickles[0]}), which can run code when loaded; "
            "pass --allow-pickle if you trust them"
        )
    if not has_safetensors and not pickles:
        raise ModelError(f"{path} has no weights (*.safetensors)")


def convert_gguf(gguf_path: Path, cache_dir: Path, log: Log) -> Path:
    """Dequantise a GGUF file once into ``cache_dir`` (safetensors + tokenizer); atomic."""
    if (cache_dir / _CACHE_MARKER).is_file():
        return cache_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log(f"dequantising {gguf_path.name} once (cached afterwards in {cache_dir})")
    start = time.perf_counter()
    src_dir, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            src_dir,
            gguf_file=name,
            quantization_config=GgufConfig(gguf_file=name, dequantize=True),
            dtype=torch.float32,
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot read GGUF file {gguf_path}: {str(exc).splitlines()[0]}") from exc
    tmp = cache_dir.with_name(cache_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    marker = {"source": str(gguf_path), "seconds": round(time.perf_counter() - start, 1)}
    (tmp / _CACHE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    os.replace(tmp, cache_dir)
    return cache_dir


def resolve_model(kind: str, rest: str, *, allow_pickle: bool = False, log: Log = lambda _m: None) -> ResolvedModel:
    """Turn ``demo/NAME``, ``gguf/FILE`` or ``hf/DIR-OR-HUB-ID`` into a loadable transformers location."""
    spec = f"{kind}/{rest}"
    home = unredact_home()
    if kind == "demo":
        demo = get_demo(rest)
        cache = home / "models" / demo.name
        if not (cache / _CACHE_MARKER).is_file():
            gguf = assemble_gguf(demo.name, home, log)
            convert_gguf(gguf, cache, log)
        return ResolvedModel(spec, str(cache), True, {"demo": demo.name, "gguf_sha256": demo.sha256})
    if kind == "gguf":
        gguf = Path(rest).expanduser()
        if not gguf.is_file():
            raise ModelError(f"GGUF file not found: {gguf}")
        with gguf.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"{gguf} is not a GGUF file (bad magic bytes)")
        digest = sha256_file(gguf)
        cache = home / "models" / f"gguf-{digest[:16]}"
        convert_gguf(gguf, cache, log)
        return ResolvedModel(spec, str(cache), True, {"gguf_sha256": digest, "gguf_file": gguf.name})
    if kind == "hf":
        path = Path(rest).expanduser()
        if path.exists():
            _check_local_dir(path, allow_pickle)
            return ResolvedModel(spec, str(path), True, {"local_dir": str(path)})
        if rest.startswith((".", "/", "~")) or rest.count("/") != 1:
            raise ModelError(f"model directory not found: {path}")
        return ResolvedModel(spec, rest, False, {"hub_id": rest})
    raise ModelError(f"{spec!r} is not a local model spec")


def torch_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` means bfloat16 (fast on CPUs with bf16 units and on GPUs), else the named dtype."""
    import torch

    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name == "auto":
        return torch.bfloat16
    if name not in table:
        raise ModelError(f"unknown dtype {name!r} (auto, float32, bfloat16, float16)")
    return table[name]


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    resolved: ResolvedModel,
    *,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer (left padding, a pad token set) in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    dev = pick_device(device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype, dev), "trust_remote_code": trust_remote_code}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if dev.startswith("cuda") and device == "auto":
        kwargs["device_map"] = "auto"
    from safetensors import SafetensorError

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load {resolved.spec}: {first}") from exc
    if "device_map" not in kwargs:
        model.to(dev)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer

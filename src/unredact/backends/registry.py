"""Parse model specs (``kind/rest``) and load the matching backend, importing its dependencies lazily."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from unredact.backends.base import Backend
from unredact.errors import BackendError

#: spec prefix -> "module:factory". A factory takes (rest_of_spec, BackendOptions).
_REGISTRY: dict[str, str] = {
    "mock": "unredact.backends.mock:MockBackend",
    "openai": "unredact.backends.openai:OpenAIBackend",
    "hf": "unredact.backends.hf:HFBackend",
    "gguf": "unredact.backends.hf:HFBackend",
    "demo": "unredact.backends.hf:HFBackend",
}

LOCAL_KINDS = frozenset({"hf", "gguf", "demo"})


@dataclass
class BackendOptions:
    """Options shared by backends; each backend reads the ones it understands."""

    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8
    trust_remote_code: bool = False
    allow_pickle: bool = False
    timeout_s: float = 120.0
    concurrency: int = 4
    max_retries: int = 4
    api_key_env: str = "OPENAI_API_KEY"
    extra: dict[str, Any] = field(default_factory=dict)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``kind/rest``; raise a one-line error for anything else."""
    kind, sep, rest = spec.partition("/")
    if not sep or not rest:
        raise BackendError(
            f"model spec {spec!r} is not of the form KIND/NAME "
            f"(kinds: {', '.join(sorted(_REGISTRY))}; e.g. demo/qwen2.5-coder-0.5b, hf/./my-model, "
            "openai/gpt-4o@https://api.openai.com/v1, mock/censor)"
        )
    if kind not in _REGISTRY:
        raise BackendError(f"unknown backend {kind!r} in {spec!r} (known: {', '.join(sorted(_REGISTRY))})")
    return kind, rest


def check_spec(spec: str) -> None:
    """Cheap checks of a spec before any work starts: syntax, known demo name, local files present."""
    from pathlib import Path

    kind, rest = parse_spec(spec)
    if kind == "demo":
        from unredact.models.demo import get_demo

        get_demo(rest)
    elif kind == "gguf" and not Path(rest).expanduser().is_file():
        raise BackendError(f"GGUF file not found: {rest}")
    elif kind == "hf":
        path = Path(rest).expanduser()
        hub_like = not rest.startswith((".", "/", "~")) and rest.count("/") == 1
        if not path.exists() and not hub_like:
            raise BackendError(f"model directory not found: {rest}")


def load_backend(spec: str, options: BackendOptions | None = None) -> Backend:
    """Instantiate the backend for ``spec``; its optional dependencies are imported only now."""
    kind, rest = parse_spec(spec)
    module_name, _, attr = _REGISTRY[kind].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an optional dependency is missing
        raise BackendError(f"backend {kind!r} needs a missing package ({exc.name}); install unredact[hf]") from exc
    factory = getattr(module, attr)
    backend: Backend = factory(kind, rest, options or BackendOptions())
    return backend

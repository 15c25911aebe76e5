"""Backends: a lazy registry of model access methods (``hf/``, ``gguf/``, ``demo/``, ``openai/``, ``mock/``)."""

from unredact.backends.base import Backend, GenerationRequest, GenerationResult, Progress
from unredact.backends.registry import load_backend, parse_spec

__all__ = ["Backend", "GenerationRequest", "GenerationResult", "Progress", "load_backend", "parse_spec"]

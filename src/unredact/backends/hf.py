"""The local transformers backend (``hf/``, ``gguf/``, ``demo/``): generation plus white-box access."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from unredact.backends.base import GenerationRequest, GenerationResult, ProgressCallback
from unredact.backends.registry import BackendOptions
from unredact.models.loader import load_model, resolve_model

if TYPE_CHECKING:
    import torch


class HFBackend:
    """A loaded local model. Besides ``generate`` it exposes the model, tokenizer, hidden states and
    layers (the white-box capability that removal needs)."""

    white_box = True

    def __init__(self, kind: str, rest: str, options: BackendOptions, log: Callable[[str], None] | None = None) -> None:
        from unredact.engine import GenerationEngine

        self.spec = f"{kind}/{rest}"
        self.options = options
        started = time.perf_counter()
        self.resolved = resolve_model(kind, rest, allow_pickle=options.allow_pickle, log=log or _stderr)
        self.model, self.tokenizer = load_model(
            self.resolved,
            dtype=options.dtype,
            device=options.device,
            trust_remote_code=options.trust_remote_code,
            allow_pickle=options.allow_pickle,
        )
        self.load_seconds = time.perf_counter() - started
        self.engine = GenerationEngine(self.model, self.tokenizer, batch_size=options.batch_size)

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[GenerationResult]:
        return self.engine.generate(requests, progress)

    # -- white-box ---------------------------------------------------------------------------------
    def encode_chats(self, chats: Sequence[Sequence[dict[str, str]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask of rendered chats (generation prompt included)."""
        return self.engine.encode([self.engine.render(c) for c in chats])

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        cfg = self.model.config
        return {
            "backend": "hf",
            "spec": self.spec,
            "origin": self.resolved.origin,
            "model_type": getattr(cfg, "model_type", None),
            "num_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(next(self.model.parameters()).device),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_seconds": round(self.load_seconds, 2),
            **self.engine.describe(),
        }

    def close(self) -> None:
        del self.model


def _stderr(message: str) -> None:
    import sys

    print(f"unredact: {message}", file=sys.stderr)

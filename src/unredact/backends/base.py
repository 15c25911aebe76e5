"""The narrow backend interface: generation requests in, generation results out."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion to produce. ``key`` identifies it in results (probe id + sample index)."""

    key: str
    messages: tuple[Message, ...]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class GenerationResult:
    """The answer to one request; ``error`` is set (and ``text`` empty) when the backend failed."""

    key: str
    text: str
    finish_reason: FinishReason
    n_tokens: int | None = None
    latency_s: float = 0.0
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """Progress counters reported by a backend while it works."""

    done: int = 0
    total: int = 0
    tokens: int = 0


ProgressCallback = Callable[[Progress], None]


@runtime_checkable
class Backend(Protocol):
    """Anything that answers chat requests. Audits need nothing more."""

    spec: str

    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[GenerationResult]:
        """Yield one result per request, in any order, as soon as each is ready."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts for the reproducibility record (no secrets)."""
        ...

    def close(self) -> None: ...

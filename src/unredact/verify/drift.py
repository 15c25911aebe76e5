"""Drift: how far the modified model's next-token distributions moved on harmless prompts.

The original model answers each harmless prompt greedily; both models are then teacher-forced on
that same answer and compared over its first ``k`` tokens with KL(original ‖ modified), per prompt
(see :func:`unredact.whitebox.objectives.kl_per_prompt`). The original's log-probabilities are
computed once and kept in memory while the modified model is loaded, so the two models never need
to be in memory together. Reported per language as a distribution (mean, median, 90th percentile,
maximum and a histogram on log-spaced bins), since a small mean can hide a few broken prompts.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unredact.probes.schema import Probe
from unredact.whitebox.objectives import TeacherForced, answer_logprobs, chats_for, kl_per_prompt, teacher_forced_inputs

if TYPE_CHECKING:
    from torch import Tensor, nn

    from unredact.backends.hf import HFBackend

#: histogram bin edges (KL in nats); the last bin is open-ended
BINS: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0)


@dataclass
class DriftBase:
    """The original model's side of the comparison."""

    inputs: TeacherForced
    base: Tensor
    ids: list[str]  # probe id of each row, in row order


def drift_base(
    backend: HFBackend, probes: Sequence[Probe], *, k: int, system_prompt: str | None, batch_size: int
) -> DriftBase:
    """Teacher-forcing inputs and log-probs of the original model on ``probes``."""
    chats = chats_for([p.prompt for p in probes], system_prompt)
    inputs = teacher_forced_inputs(backend, chats, [p.lang for p in probes], k=k, batch_size=batch_size)
    return DriftBase(inputs, answer_logprobs(backend.model, inputs), [probes[i].id for i in inputs.order])


def drift_rows(base: DriftBase, model: nn.Module) -> list[dict[str, Any]]:
    """``{"id", "lang", "kl"}`` per prompt for the modified ``model``."""
    kl = kl_per_prompt(base.base, model, base.inputs)
    return [
        {"id": pid, "lang": lang, "kl": float(x)}
        for pid, lang, x in zip(base.ids, base.inputs.langs, kl.tolist(), strict=True)
    ]


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def histogram(xs: Sequence[float]) -> list[int]:
    counts = [0] * len(BINS)
    for x in xs:
        counts[max(i for i, edge in enumerate(BINS) if x >= edge)] += 1
    return counts


def distribution(xs: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(xs),
        "mean": statistics.fmean(xs),
        "median": statistics.median(xs),
        "p90": _quantile(xs, 0.9),
        "max": max(xs),
        "hist": histogram(xs),
    }


def drift_summary(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Distribution of KL per language and over all prompts (``"all"``)."""
    out = {"all": distribution([r["kl"] for r in rows])}
    for lang in dict.fromkeys(r["lang"] for r in rows):
        out[lang] = distribution([r["kl"] for r in rows if r["lang"] == lang])
    return out

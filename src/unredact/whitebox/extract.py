"""The `unredact directions` stage: hidden states of train-split probe groups -> a saved DirectionSet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from unredact.backends.hf import HFBackend
from unredact.errors import UnredactError
from unredact.judge.core import CENSORED
from unredact.probes.loader import load_probes, probes_hash, select_balanced, select_probes
from unredact.probes.schema import Probe
from unredact.rundir import RESPONSES, VERDICTS, read_jsonl
from unredact.ui import console
from unredact.whitebox.directions import DirectionSet, answer_start_hidden_states, compute_directions


def hidden_states(
    backend: HFBackend, probes: Sequence[Probe], batch_size: int, response_tokens: int = 0
) -> torch.Tensor:
    """Hidden states of every layer at the last prompt token (averaged with the first ``response_tokens``
    greedy answer tokens when > 0), float32, shape [n, layers + 1, hidden]."""
    from unredact.engine import eos_token_ids

    eos = eos_token_ids(backend.model, backend.tokenizer)
    chunks = []
    for start in range(0, len(probes), batch_size):
        chats = [[{"role": "user", "content": p.prompt}] for p in probes[start : start + batch_size]]
        ids, mask = backend.encode_chats(chats)
        chunks.append(answer_start_hidden_states(backend.model, ids, mask, response_tokens, eos))
    return torch.cat(chunks)


def censored_ids(audit_run: Path) -> set[str]:
    """Probe ids whose answers the audit judged censored (restricts the sensitive group to them)."""
    verdicts = list(read_jsonl(audit_run / VERDICTS))
    if not verdicts or not (audit_run / RESPONSES).exists():
        raise UnredactError(f"{audit_run} has no judged answers; run `unredact audit` there first")
    return {str(v["id"]) for v in verdicts if v.get("label") in CENSORED}


def extract_directions(
    backend: HFBackend,
    probes_spec: str,
    out: Path,
    audit_run: Path | None = None,
    batch_size: int = 16,
    response_tokens: int = 0,
    max_prompts: int = 0,
) -> DirectionSet:
    """Directions from the train split's groups, saved to ``out``. ``max_prompts`` > 0 caps each group
    (whole questions round-robin over topics, so languages and topics stay balanced)."""
    probes = load_probes(probes_spec)
    train = select_probes(probes, splits=["train"])
    groups = {
        kind: [p for p in train if p.kind == kind] for kind in ("sensitive", "control-sensitive", "harmful", "harmless")
    }
    if audit_run is not None:
        keep = censored_ids(audit_run)
        groups["sensitive"] = [p for p in groups["sensitive"] if p.id in keep]
    if max_prompts > 0:
        groups = {
            kind: select_balanced(items, kind=kind, split="train", n=max_prompts) for kind, items in groups.items()
        }
    for kind, items in groups.items():
        if len(items) < 4:
            raise UnredactError(f"too few train-split {kind} probes ({len(items)}) to estimate a direction")
    states = {}
    for kind, items in groups.items():
        where = f" (last prompt token + {response_tokens} answer tokens)" if response_tokens else ""
        console.print(f"hidden states: {len(items)} {kind} prompts{where}")
        states[kind] = hidden_states(backend, items, batch_size, response_tokens)
    control = torch.cat([states["control-sensitive"], states["harmless"]])
    directions = compute_directions(
        states["sensitive"],
        control,
        states["harmful"],
        states["harmless"],
        model_id=backend.spec,
        prompt_hashes={kind: probes_hash(items) for kind, items in groups.items()},
        meta={
            "probes": probes_spec,
            "audit_run": str(audit_run) if audit_run else None,
            "counts": {kind: len(items) for kind, items in groups.items()},
            "response_tokens": response_tokens,
            "max_prompts": max_prompts,
        },
    )
    directions.save(out)
    return directions

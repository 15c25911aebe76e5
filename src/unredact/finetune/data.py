"""Training examples (gold answers, safety refusals, the model's own harmless answers) and batches.

Only answer tokens are learned: prompt and padding positions carry the label -100. An answer that was
cut at the token cap gets no end-of-turn token, so the model is not taught to stop mid-sentence.

A gold example may also weigh the answer tokens that spell one of its probe's documented facts more than
the rest (``fact_weight``): the facts are what the model has to learn to recall, the connecting prose is
not.

A gold example may carry a *rejected* answer: the original model's own censored answer (refusal,
deflection or official line) to the same prompt. The preference term of the training loss makes the
gold answer more likely than the rejected one (see :mod:`unredact.finetune.train`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from unredact.finetune.gold import GoldAnswer
from unredact.judge.core import CENSORED

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One supervised chat turn."""

    key: str
    source: str  # "gold" (candid answer), "refusal" (harmful request) or "retain" (the model's own answer)
    lang: str
    prompt: str
    answer: str
    complete: bool = True
    rejected: str | None = None  # a censored answer to the same prompt, to be made less likely
    rejected_complete: bool = True
    facts: tuple[str, ...] = ()  # surface forms of the probe's documented facts (gold answers only)


@dataclass(frozen=True)
class Tokenized:
    key: str
    source: str
    input_ids: list[int]
    labels: list[int]
    rejected_ids: list[int] | None = None  # prompt + rejected answer
    rejected_labels: list[int] | None = None
    weights: list[float] | None = None  # per-position loss weights of ``labels`` (None: every answer token 1)

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def gold_examples(gold: Iterable[GoldAnswer], harmful_repeat: int = 1) -> list[Example]:
    """Candid answers for sensitive probes; refusals (repeated ``harmful_repeat`` times) for harmful ones."""
    out: list[Example] = []
    for g in gold:
        p = g.probe
        source = "refusal" if p.kind == "harmful" else "gold"
        copies = max(1, harmful_repeat) if source == "refusal" else 1
        facts = tuple(form for fact in p.facts for form in fact.forms) if source == "gold" else ()
        out += [
            Example(f"{p.id}~{i}" if i else p.id, source, p.lang, p.prompt, g.response, facts=facts)
            for i in range(copies)
        ]
    return out


def fact_spans(text: str, forms: Iterable[str]) -> list[tuple[int, int]]:
    """Character spans of ``text`` where any of ``forms`` occurs (case-insensitive), in text order."""
    found = (re.finditer(re.escape(form), text, re.IGNORECASE) for form in forms if form.strip())
    return sorted({(m.start(), m.end()) for matches in found for m in matches})


def token_weights(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], weight: float) -> list[float]:
    """``weight`` for each token whose character range overlaps a span, 1.0 for the others."""
    return [weight if any(a < e and s < b for s, e in spans) else 1.0 for a, b in offsets]


_NOT_RETAINED = frozenset({"refusal", "deflection", "error", "unscored"})


def retain_examples(rows: Iterable[dict[str, Any]]) -> tuple[list[Example], int]:
    """The model's own answers to keep as they are: to harmless and neutral prompts, those not judged
    refusal/deflection/error; to harmful prompts (when asked), only its refusals.

    Returns the examples and how many answers were dropped.
    """
    out: list[Example] = []
    dropped = 0
    for r in rows:
        text = str(r.get("response") or "").strip()
        label = r.get("label")
        keep = label == "refusal" if r.get("kind") == "harmful" else label not in _NOT_RETAINED
        if not keep or not text:
            dropped += 1
            continue
        complete = r.get("finish_reason") != "length"
        out.append(Example(str(r["id"]), "retain", str(r.get("lang", "")), str(r["prompt"]), text, complete))
    return out, dropped


def rejected_labels(fabrication: bool) -> frozenset[str]:
    """Verdicts whose answers are made less likely than the gold answer: the censored ones and, when asked,
    fabrications (answers that assert things but state none of the documented facts)."""
    return CENSORED | {"fabrication"} if fabrication else CENSORED


def rejected_kind(fabrication: bool) -> str:
    """How the rejected answers are named in messages and the model card."""
    return "censored or fabricated" if fabrication else "censored"


def attach_rejected(
    examples: Sequence[Example], rows: Iterable[dict[str, Any]], labels: frozenset[str] = CENSORED
) -> tuple[list[Example], int]:
    """Give each gold example the original model's own answer to its probe, where the audit rows ``rows``
    hold one judged with one of ``labels`` (by default refusal, deflection or state narrative). Returns
    the examples and the number of pairs made."""
    rejectable: dict[str, tuple[str, bool]] = {}
    for r in rows:
        text = str(r.get("response") or "").strip()
        if r.get("label") in labels and text:
            rejectable.setdefault(str(r["id"]), (text, r.get("finish_reason") != "length"))
    out: list[Example] = []
    pairs = 0
    for ex in examples:
        hit = rejectable.get(ex.key) if ex.source == "gold" else None
        if hit is None or hit[0] == ex.answer:
            out.append(ex)
            continue
        out.append(replace(ex, rejected=hit[0], rejected_complete=hit[1]))
        pairs += 1
    return out, pairs


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None) -> str:
    """The chat template with the generation prompt, exactly as generation renders it."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def tokenize(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    *,
    system_prompt: str | None = None,
    max_length: int = 384,
    fact_weight: float = 1.0,
) -> list[Tokenized]:
    """Prompt + answer (+ end of turn when complete) token ids, with labels only on the answer.

    Over-long examples lose the end of their answer (and then the end-of-turn token); an example
    whose prompt alone fills ``max_length`` is an error, as nothing of its answer would be learned.
    With ``fact_weight`` != 1, examples with facts get per-token ``weights``: ``fact_weight`` on the
    answer tokens that overlap a fact form, 1 elsewhere (needs a fast tokenizer's character offsets).
    """
    from unredact.errors import UnredactError

    eos = tokenizer.eos_token_id
    weigh = fact_weight != 1.0
    if weigh and not getattr(tokenizer, "is_fast", False):
        raise UnredactError("--fact-weight needs a fast tokenizer (character offsets of the answer tokens)")

    def answer_ids(
        text: str, complete: bool, room: int, facts: Sequence[str] = ()
    ) -> tuple[list[int], list[float] | None]:
        """Answer token ids (+ end of turn), cut to ``room``; with facts to weigh, each token's weight
        from the same tokenisation's character offsets (the end-of-turn token weighs 1)."""
        offsets = weigh and bool(facts)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
        ids = list(encoded["input_ids"])
        weights = None
        if offsets:
            spans = [(int(a), int(b)) for a, b in encoded["offset_mapping"]]
            weights = token_weights(spans, fact_spans(text, facts), fact_weight)
        if complete and eos is not None:
            ids.append(int(eos))
            weights = [*weights, 1.0] if weights is not None else None
        return ids[:room], weights[:room] if weights is not None else None

    out: list[Tokenized] = []
    for ex in examples:
        prompt_text = render_prompt(tokenizer, ex.prompt, system_prompt)
        prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
        room = max_length - len(prompt_ids)
        if room < 1:
            raise UnredactError(f"{ex.key}: the prompt alone has {len(prompt_ids)} tokens (max_length {max_length})")
        masked = [IGNORE] * len(prompt_ids)
        chosen, chosen_weights = answer_ids(ex.answer, ex.complete, room, ex.facts)
        rejected = answer_ids(ex.rejected, ex.rejected_complete, room)[0] if ex.rejected is not None else None
        weights = [0.0] * len(prompt_ids) + chosen_weights if chosen_weights is not None else None
        out.append(
            Tokenized(
                ex.key,
                ex.source,
                prompt_ids + chosen,
                masked + chosen,
                prompt_ids + rejected if rejected else None,
                masked + rejected if rejected else None,
                weights,
            )
        )
    return out


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices per batch for one epoch: shuffled, then grouped by length within windows of
    eight batches (less padding), batch order shuffled again. Deterministic in (seed, epoch), so a
    resumed run replays exactly the batches it had not finished."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * 8
    batches: list[list[int]] = []
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


def _pad(seqs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (seq, lab) in enumerate(seqs):
        n = len(seq)
        ids[row, :n] = torch.tensor(seq)
        labels[row, :n] = torch.tensor(lab)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate(items: Sequence[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels; ``weights`` (per-position loss weights, 1 on the
    answer tokens of items without their own) when any item has them; ``retain_rows``, the row numbers of
    the model's own retained answers; for the rows that carry a rejected answer, ``pair_rows`` (their row
    numbers) and the padded rejected sequences under ``rejected_*`` keys."""
    import torch

    batch = _pad([(t.input_ids, t.labels) for t in items], pad_id)
    if any(t.weights is not None for t in items):
        weights = (batch["labels"] != IGNORE).float()
        for row, t in enumerate(items):
            if t.weights is not None:
                weights[row, : len(t.weights)] = torch.tensor(t.weights)
        batch["weights"] = weights
    retain = [i for i, t in enumerate(items) if t.source == "retain"]
    if retain:
        batch["retain_rows"] = torch.tensor(retain, dtype=torch.long)
    rows = [i for i, t in enumerate(items) if t.rejected_ids is not None and t.rejected_labels is not None]
    if rows:
        rejected = _pad([(items[i].rejected_ids or [], items[i].rejected_labels or []) for i in rows], pad_id)
        batch["pair_rows"] = torch.tensor(rows, dtype=torch.long)
        batch.update({f"rejected_{k}": v for k, v in rejected.items()})
    return batch

"""Log-likelihood of continuations, the way multiple-choice benchmarks score a model.

For a request ``(context, continuation)`` the score is ``Σ_t log P(c_t | context, c_<t)`` over the
continuation's tokens, computed in float32 from one teacher-forced forward pass. The continuation is
tokenised *in context*: the ids of ``context + continuation`` past the context's own ids (so a
leading space merges into the first word token the way the model would write it); when the
tokenizer does not split at that boundary, the two parts are encoded separately and concatenated.
``greedy`` says whether every continuation token is the model's argmax (lm-eval's ``is_greedy``).

Requests are scored in batches sorted by length, right-padded (no position shift needed); the
result order is the request order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from unredact.errors import UnredactError
from unredact.whitebox.arch import model_device

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Loglik:
    """Score of one continuation: summed log-prob, token count, whether greedy decoding would emit it."""

    logprob: float
    n_tokens: int
    greedy: bool


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the context and of the continuation as the model would write it after the context."""
    enc = tokenizer
    ctx = list(enc(context, add_special_tokens=False)["input_ids"]) if context else []
    whole = list(enc(context + continuation, add_special_tokens=False)["input_ids"])
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    cont = list(enc(continuation, add_special_tokens=False)["input_ids"])
    return ctx, cont


@torch.no_grad()
def continuation_logliks(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    max_length: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> list[Loglik]:
    """Score every ``(context, continuation)``; ``progress(n)`` is called after each batch with its size."""
    encoded = [encode_pair(tokenizer, c, x) for c, x in requests]
    for i, (ctx, cont) in enumerate(encoded):
        if not cont:
            raise UnredactError(f"request {i}: the tokenizer gives no tokens for the continuation {requests[i][1]!r}")
        if not ctx:
            raise UnredactError(f"request {i}: empty context (a continuation needs something to follow)")
        if len(ctx) + len(cont) > max_length:
            keep = max_length - len(cont)
            if keep < 1:
                raise UnredactError(f"request {i}: continuation alone is longer than {max_length} tokens")
            encoded[i] = (ctx[-keep:], cont)  # keep the end of the context, as truncating benchmarks do
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    device = model_device(model)
    pad = 0
    results: list[Loglik | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        seqs = [encoded[i][0] + encoded[i][1] for i in rows]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        for r, i in enumerate(rows):
            ctx, cont = encoded[i]
            # logits at position p predict token p+1: continuation tokens sit at len(ctx)..len(ctx)+len(cont)-1
            span = logits[r, len(ctx) - 1 : len(ctx) + len(cont) - 1].float().log_softmax(-1)
            target = torch.tensor(cont, device=span.device)
            lp = span.gather(-1, target[:, None]).squeeze(-1)
            results[i] = Loglik(float(lp.sum()), len(cont), bool((span.argmax(-1) == target).all()))
        if progress is not None:
            progress(len(rows))
    return [r for r in results if r is not None]

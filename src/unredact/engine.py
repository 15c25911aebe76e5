"""Batched generation for local transformers models: length-sorted batches, left padding, KV cache,
per-row seeds (results do not depend on batch composition), stop strings, finished rows dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from unredact.backends.base import GenerationRequest, GenerationResult, Progress, ProgressCallback

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


@dataclass
class _Row:
    request: GenerationRequest
    tokens: list[int]
    generator: torch.Generator | None
    start: float


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token id that ends an assistant turn for this model."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN_TOKENS if t in vocab)
    return ids


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token (padding clamped to 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """One cached forward pass over left-padded prompts: last-position logits, the KV cache, positions."""
    from transformers import DynamicCache

    positions = left_padded_positions(attention_mask)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :], cache, positions


class GenerationEngine:
    """Turns chat requests into answers with one model; see module docstring."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.device = next(model.parameters()).device

    # -- prompts -----------------------------------------------------------------------------------
    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The chat template applied with the generation prompt (the text the model continues)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            return str(text)
        # Models without a template: a plain transcript.
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join([*lines, "Assistant:"])

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids and attention mask (no special tokens added: templates carry them)."""
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def prompt_lengths(self, requests: Sequence[GenerationRequest]) -> list[int]:
        return [len(self.tokenizer(self.render(r.messages), add_special_tokens=False)["input_ids"]) for r in requests]

    # -- generation --------------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[GenerationRequest], progress: ProgressCallback | None = None
    ) -> Iterator[GenerationResult]:
        """Yield results batch by batch; batches group prompts of similar length (less padding)."""
        state = Progress(total=len(requests))
        lengths = self.prompt_lengths(requests)
        order = sorted(range(len(requests)), key=lambda i: (requests[i].max_new_tokens, lengths[i]))
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start : start + self.batch_size]]
            yield from self._generate_batch(batch, state, progress)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Next token per row: argmax for greedy rows, seeded multinomial (temperature, top-p) otherwise."""
        next_tokens = logits.argmax(dim=-1)
        for i, row in enumerate(rows):
            req = row.request
            if req.greedy:
                continue
            probs = torch.softmax(logits[i].float() / req.temperature, dim=-1)
            if req.top_p < 1.0:
                sorted_p, idx = probs.sort(descending=True)
                keep = sorted_p.cumsum(-1) - sorted_p < req.top_p
                probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
            next_tokens[i] = torch.multinomial(probs, 1, generator=row.generator)[0]
        return next_tokens

    def _finish(self, row: _Row, reason: str) -> GenerationResult:
        tokens = row.tokens
        if tokens and tokens[-1] in self.eos_ids:
            tokens = tokens[:-1]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in row.request.stop:
            if stop and stop in text:
                text, reason = text.split(stop, 1)[0], "stop"
        return GenerationResult(
            key=row.request.key,
            text=text.strip(),
            finish_reason=reason,  # type: ignore[arg-type]
            n_tokens=len(row.tokens),
            latency_s=time.perf_counter() - row.start,
        )

    def _hit_stop(self, row: _Row) -> bool:
        if not row.request.stop:
            return False
        tail = self.tokenizer.decode(row.tokens[-16:], skip_special_tokens=True)
        return any(s and s in tail for s in row.request.stop)

    @torch.inference_mode()
    def _generate_batch(
        self, batch: list[GenerationRequest], state: Progress, progress: ProgressCallback | None
    ) -> Iterator[GenerationResult]:
        now = time.perf_counter()
        rows = [_Row(r, [], None if r.greedy else torch.Generator().manual_seed(r.seed), now) for r in batch]
        input_ids, attn = self.encode([self.render(r.messages) for r in batch])
        logits, cache, positions = prefill(self.model, input_ids, attn)
        last_pos = positions[:, -1]
        max_new = max(r.max_new_tokens for r in batch)
        for step in range(max_new):
            next_tokens = self._sample(logits, rows)
            keep: list[int] = []
            for i, row in enumerate(rows):
                token = int(next_tokens[i])
                row.tokens.append(token)
                state.tokens += 1
                if token in self.eos_ids or self._hit_stop(row):
                    reason = "stop"
                elif len(row.tokens) >= row.request.max_new_tokens:
                    reason = "length"
                else:
                    keep.append(i)
                    continue
                state.done += 1
                yield self._finish(row, reason)
            if progress:
                progress(state)
            if not keep or step == max_new - 1:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                rows = [rows[i] for i in keep]
                next_tokens, attn, last_pos = next_tokens[index], attn[index], last_pos[index]
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=-1)
            last_pos = last_pos + 1
            out = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=attn,
                position_ids=last_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :]

    def describe(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "eos_ids": sorted(self.eos_ids)}

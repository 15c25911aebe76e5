"""LoRA supervised fine-tuning with checkpoints: a killed run resumes at its last checkpoint and replays
exactly the batches it had not finished (the batch order is a function of the seed and the epoch).

The loss is the token-mean negative log-likelihood of the answers (a weighted mean where examples carry
per-token weights: the documented facts of gold answers weighed more, see ``--fact-weight``), plus,
when ``preference_weight`` > 0, an odds-ratio preference term for the examples that carry a rejected
(censored) answer, as in ORPO (Hong et al., 2024): with p(y) the per-token geometric-mean probability of
an answer, ``-log sigmoid(log odds p(chosen) - log odds p(rejected))``, averaged over the pairs of the
batch.
Plain likelihood training on candid answers leaves the official line likely; this term pushes it down
without a reference model.

With ``retain_kl_weight`` > 0, the examples of source ``retain`` (the model's own answers to harmless
prompts) also add the KL divergence from the original model's next-token distributions (the same model
with its adapters disabled) over their answer tokens: the whole distribution is held in place, not only
the greedy token, which is what the drift check of ``unredact verify`` measures."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unredact.errors import UnredactError
from unredact.finetune.data import IGNORE, Tokenized, collate, epoch_batches
from unredact.rundir import ADAPTER_WEIGHTS, atomic_dir, atomic_write_text, read_jsonl
from unredact.ui import console, training_progress

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from torch import nn

    from unredact.whitebox.arch import ArchSpec

CHECKPOINT = "checkpoint"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class LoraOptions:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    layers: tuple[int, ...] | None = None  # decoder layers that get adapters (None: all)


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 2
    lr: float = 2e-4
    batch_size: int = 8
    micro_batch_size: int = 8  # examples per forward/backward pass; gradients accumulate up to batch_size
    warmup_steps: int = 8
    max_grad_norm: float = 1.0
    checkpoint_every: int = 20
    seed: int = 0
    preference_weight: float = 0.0  # weight of the odds-ratio term for examples with a rejected answer
    retain_kl_weight: float = 0.0  # weight of KL(original || tuned) on the retained answers' tokens


def attach_lora(model: nn.Module, opts: LoraOptions, seed: int = 0, arch: ArchSpec | None = None) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters (float32, seeded init); the base weights stay frozen.

    ``arch`` (default: the architecture table's entry) says where the decoder layers are, for adapters
    on some layers only: their module names and the layer-list name peft matches (``layers`` in
    ``model.layers.3.mlp``)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    targets: str | list[str] = (
        opts.target_modules if isinstance(opts.target_modules, str) else list(opts.target_modules)
    )
    layers_pattern = None
    if opts.layers is not None:
        from unredact.whitebox.arch import resolve_arch

        spec = arch or resolve_arch(model)
        layers_pattern = spec.layers.rsplit(".", 1)[-1]
        if targets == "all-linear":
            targets = decoder_linear_names(model, spec)  # peft selects layers only with explicit module names
    try:
        config = LoraConfig(
            r=opts.rank,
            lora_alpha=opts.alpha,
            lora_dropout=opts.dropout,
            target_modules=targets,
            layers_to_transform=list(opts.layers) if opts.layers is not None else None,
            layers_pattern=layers_pattern,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise UnredactError(f"cannot attach LoRA adapters: {str(exc).splitlines()[0]}") from exc
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # adapters train in float32 even on a bfloat16 base
    return peft_model


def decoder_linear_names(model: nn.Module, arch: ArchSpec | None = None) -> list[str]:
    """Names (last component) of the linear modules inside the decoder layers, e.g. q_proj ... down_proj."""
    from torch import nn

    from unredact.whitebox.arch import decoder_layers

    names = {n.rsplit(".", 1)[-1] for layer in decoder_layers(model, arch) for n, m in layer.named_modules()
             if isinstance(m, nn.Linear)}  # fmt: skip
    if not names:
        raise UnredactError("no linear modules found in the decoder layers; pass --lora-targets")
    return sorted(names)


def parse_layers(text: str, n_layers: int) -> tuple[int, ...] | None:
    """``all`` -> None; ``A-B`` -> layers A..B; ``top:K`` -> the last K layers; ``1,3,5`` -> those layers."""
    text = text.strip()
    if text == "all":
        return None
    try:
        if text.startswith("top:"):
            k = int(text[4:])
            layers = tuple(range(max(0, n_layers - k), n_layers)) if k > 0 else ()
        elif "-" in text:
            a, b = (int(x) for x in text.split("-", 1))
            layers = tuple(range(a, b + 1))
        else:
            layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise UnredactError(f"lora layers {text!r}: expected all, A-B, top:K or a comma-separated list") from exc
    if not layers or min(layers) < 0 or max(layers) >= n_layers:
        raise UnredactError(f"lora layers {text!r}: the model has layers 0-{n_layers - 1}")
    return layers


def trainable(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def lr_at(step: int, total: int, opts: TrainOptions) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak rate."""
    if step < opts.warmup_steps:
        return opts.lr * (step + 1) / opts.warmup_steps
    span = max(1, total - opts.warmup_steps)
    progress = min(1.0, (step - opts.warmup_steps) / span)
    return opts.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: PeftModel, path: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise UnredactError(f"{path} does not fit this model (unexpected adapter weights: {unexpected[0]} ...)")


def fingerprint(data: Sequence[Tokenized], opts: TrainOptions) -> str:
    """Hash of the training examples and options: a checkpoint only resumes the run that wrote it."""
    import hashlib

    free = ("micro_batch_size", "checkpoint_every")  # they change neither the batches nor the gradients
    options = {k: v for k, v in asdict(opts).items() if k not in free}
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for t in data:
        h.update(json.dumps([t.key, t.input_ids, t.labels]).encode())
        if t.rejected_ids is not None:
            h.update(json.dumps([t.rejected_ids, t.rejected_labels]).encode())
        if t.weights is not None:
            h.update(json.dumps(t.weights).encode())
    return h.hexdigest()[:16]


def save_checkpoint(
    model: PeftModel, optimizer: torch.optim.Optimizer, step: int, out: Path, data_hash: str = ""
) -> None:
    """Adapter weights, optimizer state, RNG state and the step, replaced as one directory."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(out, overwrite=True) as tmp:
        save_file(adapter_state(model), str(tmp / ADAPTER_WEIGHTS))
        torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp / "state.pt")
        (tmp / "step.json").write_text(json.dumps({"step": step, "data": data_hash}), encoding="utf-8")


def load_checkpoint(model: PeftModel, optimizer: torch.optim.Optimizer, path: Path, data_hash: str = "") -> int:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns its step (0 when there is none)."""
    import torch

    if not (path / "step.json").is_file():
        return 0
    meta = json.loads((path / "step.json").read_text(encoding="utf-8"))
    if meta.get("data", "") != data_hash:
        raise UnredactError(f"{path} was written for other training data or options; delete it to start over")
    load_adapter_state(model, path / ADAPTER_WEIGHTS)
    state = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return int(meta["step"])


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from (they are redone)."""
    if path.is_file():
        keep = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


@dataclass
class TrainResult:
    steps: int
    epochs: int
    examples: int
    answer_tokens: int
    first_loss: float | None
    last_loss: float | None
    seconds: float
    resumed_from: int


def train(model: PeftModel, data: Sequence[Tokenized], pad_id: int, opts: TrainOptions, work: Path) -> TrainResult:
    """Fine-tune the adapters of ``model`` on ``data``; checkpoints and the loss log go to ``work``."""
    import torch

    if not data:
        raise UnredactError("no training examples")
    lengths = [len(t.input_ids) for t in data]
    per_epoch = math.ceil(len(data) / opts.batch_size)
    total = per_epoch * opts.epochs
    optimizer = torch.optim.AdamW(trainable(model), lr=opts.lr, weight_decay=0.0)
    work.mkdir(parents=True, exist_ok=True)
    data_hash = fingerprint(data, opts)
    done = load_checkpoint(model, optimizer, work / CHECKPOINT, data_hash)
    if done:
        console.print(f"resuming training at step {done}/{total}")
    _trim_log(work / LOG, done)
    started = time.perf_counter()
    model.train()
    losses: list[float] = []
    tokens = 0
    try:
        with training_progress(total, "fine-tuning", already_done=done) as update, (work / LOG).open("a") as log:
            for step in range(done, total):
                epoch, index = divmod(step, per_epoch)
                batch = [data[i] for i in epoch_batches(lengths, opts.batch_size, opts.seed, epoch)[index]]
                size = opts.micro_batch_size
                micro = [collate(batch[i : i + size], pad_id) for i in range(0, len(batch), size)]
                terms = _step(model, optimizer, micro, lr_at(step, total, opts), opts)
                loss = terms["loss"]
                losses.append(loss)
                tokens += sum(len(t.input_ids) for t in batch)
                elapsed = time.perf_counter() - started
                line = {"step": step + 1, "epoch": epoch, **{k: round(v, 5) for k, v in terms.items()}}
                log.write(json.dumps(line) + "\n")
                log.flush()
                update(step + 1, loss, tokens / max(elapsed, 1e-6))
                if (step + 1) % opts.checkpoint_every == 0 or step + 1 == total:
                    save_checkpoint(model, optimizer, step + 1, work / CHECKPOINT, data_hash)
    finally:
        model.eval()
    logged = [float(r["loss"]) for r in read_jsonl(work / LOG)]
    return TrainResult(
        steps=total,
        epochs=opts.epochs,
        examples=len(data),
        answer_tokens=sum(t.n_answer_tokens for t in data),
        first_loss=logged[0] if logged else None,
        last_loss=_tail_mean(logged, per_epoch),
        seconds=round(time.perf_counter() - started, 1),
        resumed_from=done,
    )


def _tail_mean(values: Sequence[float], n: int) -> float | None:
    tail = values[-max(1, n) :]
    return round(sum(tail) / len(tail), 5) if tail else None


def _shifted_logits(model: nn.Module, batch: dict[str, torch.Tensor], prefix: str = "") -> tuple[Any, Any]:
    """Float logits at the positions that predict the next token, and those next tokens' labels."""
    device = next(p.device for p in model.parameters())
    ids, mask, labels = (batch[prefix + k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    return logits, labels[:, 1:]


def _token_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each labelled next token (0 where the label is ignored)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")


def _loss_weights(batch: dict[str, Any]) -> torch.Tensor:
    """Per next-token position: its weight in the likelihood term (1 on answer tokens unless weighted, 0
    elsewhere)."""
    answer = (batch["labels"][:, 1:] != IGNORE).float()
    return batch["weights"][:, 1:] * answer if "weights" in batch else answer


def answer_logprobs(model: nn.Module, batch: dict[str, torch.Tensor], prefix: str = "") -> tuple[Any, Any]:
    """Per row: the summed log-probability of the labelled (answer) tokens and their number."""
    logits, target = _shifted_logits(model, batch, prefix)
    return -_token_nll(logits, target).sum(dim=1), (target != IGNORE).sum(dim=1)


def retain_kl(
    model: PeftModel | nn.Module, batch: dict[str, torch.Tensor], rows: torch.Tensor, logits: torch.Tensor
) -> torch.Tensor:
    """Summed KL(original || tuned) of the next-token distributions over the answer tokens of ``rows``;
    the original is the same model with its adapters disabled, so no second copy is held in memory.
    ``logits`` are the tuned model's shifted logits of those rows."""
    import torch

    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise UnredactError("the retained-answer KL term needs a model with LoRA adapters")
    device = logits.device
    ids, mask = (batch[k][rows.cpu()].to(device) for k in ("input_ids", "attention_mask"))
    with torch.no_grad(), disable():
        base = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    base_lp, tuned_lp = base.log_softmax(-1), logits.log_softmax(-1)
    per_token = (base_lp.exp() * (base_lp - tuned_lp)).sum(-1)
    answer = batch["labels"][rows.cpu()][:, 1:].to(device) != IGNORE
    return (per_token * answer).sum()


def odds_ratio_loss(chosen_mean_lp: torch.Tensor, rejected_mean_lp: torch.Tensor) -> torch.Tensor:
    """ORPO's term per pair: ``-log sigmoid(log odds(chosen) - log odds(rejected))``, from mean token
    log-probabilities (log odds(p) = log p - log(1 - p))."""
    import torch
    import torch.nn.functional as F

    def log_odds(lp: torch.Tensor) -> torch.Tensor:
        lp = lp.clamp(max=-1e-6)
        return lp - torch.log1p(-torch.exp(lp))

    return -F.logsigmoid(log_odds(chosen_mean_lp) - log_odds(rejected_mean_lp))


def _step(
    model: nn.Module, optimizer: torch.optim.Optimizer, micro: Sequence[dict[str, Any]], lr: float, opts: TrainOptions
) -> dict[str, float]:
    """One optimiser step over micro-batches. The likelihood term is divided by the answer tokens of the
    whole batch, the preference term by its pairs and the retained-answer KL by the retained answers'
    tokens, so the gradient equals that of the batch at once (with per-token weights, the likelihood term
    is their weighted mean). Returns the batch's per-token likelihood loss (``loss``, unweighted, so runs
    compare), and its mean ``preference`` and per-token ``retain_kl`` terms when they apply."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = lr
    total_tokens = sum(int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro)
    total_mass = sum(float(_loss_weights(m).sum()) for m in micro)
    total_pairs = sum(len(m["pair_rows"]) for m in micro if "pair_rows" in m) if opts.preference_weight > 0 else 0
    kl_tokens = sum(_retain_tokens(m) for m in micro) if opts.retain_kl_weight > 0 else 0
    sums = {"loss": 0.0, "preference": 0.0, "retain_kl": 0.0}
    for m in micro:
        logits, target = _shifted_logits(model, m)
        token_nll = _token_nll(logits, target)
        lp, n = -token_nll.sum(dim=1), (target != IGNORE).sum(dim=1)
        if int(n.sum()) == 0:
            continue
        nll = -lp.sum() / max(1, total_tokens)
        loss = (token_nll * _loss_weights(m).to(token_nll.device)).sum() / max(total_mass, 1e-9)
        if total_pairs and "pair_rows" in m:
            rows = m["pair_rows"].to(lp.device)
            rej_lp, rej_n = answer_logprobs(model, m, "rejected_")
            pref = odds_ratio_loss(lp[rows] / n[rows].clamp(min=1), rej_lp / rej_n.clamp(min=1)).sum()
            loss = loss + opts.preference_weight * pref / total_pairs
            sums["preference"] += float(pref.detach())
        if kl_tokens and "retain_rows" in m:
            rows = m["retain_rows"].to(lp.device)
            kl = retain_kl(model, m, rows, logits[rows])
            loss = loss + opts.retain_kl_weight * kl / kl_tokens
            sums["retain_kl"] += float(kl.detach())
        if not torch.isfinite(loss):
            raise UnredactError(f"training diverged (loss {float(loss)}); lower --lr")
        loss.backward()
        sums["loss"] += float(nll.detach())
    torch.nn.utils.clip_grad_norm_(trainable(model), opts.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    out = {"loss": sums["loss"]}
    if total_pairs:
        out["preference"] = sums["preference"] / total_pairs
    if kl_tokens:
        out["retain_kl"] = sums["retain_kl"] / kl_tokens
    return out


def _retain_tokens(batch: dict[str, Any]) -> int:
    if "retain_rows" not in batch:
        return 0
    return int((batch["labels"][batch["retain_rows"]][:, 1:] != IGNORE).sum())

"""The `unredact finetune` flow: baseline test audit -> the model's own harmless answers -> (with a
preference weight) its own censored answers to train prompts -> LoRA fine-tuning on gold answers ->
merge -> test audit -> export (merged model + PEFT adapter) -> model card -> verify.

Every stage writes into the run directory and is skipped or resumed when its output is there: audits
append answers, training restarts from its last checkpoint, a finished adapter is reloaded."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from unredact import __version__
from unredact.errors import UnredactError
from unredact.probes.loader import write_probe_file
from unredact.rundir import (
    ADAPTER_WEIGHTS,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    run_lock,
    sha256_file,
    weight_hashes,
)
from unredact.ui import console
from unredact.validation import validate_settings
from unredact.whitebox.card import public_settings, reproduce_command
from unredact.whitebox.remove import LocalRunSettings

if TYPE_CHECKING:
    from unredact.backends.hf import HFBackend
    from unredact.finetune.data import Example
    from unredact.finetune.train import TrainResult
    from unredact.probes.schema import Probe

SETTINGS_FILE = "finetune.json"
EVAL_PROBES = "eval_probes.jsonl"
RETAIN_PROBES = "retain_probes.jsonl"
PREFERENCE_PROBES = "preference_probes.jsonl"
ADAPTER_DIR = "adapter"
TRAIN_DIR = "train"
TRAIN_DONE = "train.json"
MODEL_DIR = "model"
EXPORT_CHECK = "export.json"
KINDS_TEST = ["sensitive", "control-sensitive", "neutral", "harmful", "harmless"]
RETAIN_KINDS = ["harmless", "neutral"]


class FinetuneSettings(LocalRunSettings):
    """Everything that defines a fine-tuning run; field descriptions are the CLI help."""

    gold: str = Field("default", description="gold answer JSONL (train-split probe ids), or 'default' (bundled)")
    retain_max_new_tokens: int = Field(128, ge=1, le=4096, description="length of the model's own retained answers")
    harmful_repeat: int = Field(2, ge=1, le=20, description="copies of each gold refusal in the training data")
    epochs: int = Field(2, ge=1, le=100, description="passes over the training data")
    lr: float = Field(2e-4, gt=0, le=1, description="peak learning rate (warm-up, then cosine decay)")
    train_batch_size: int = Field(8, ge=1, le=1024, description="examples per optimiser step")
    micro_batch_size: int = Field(
        8, ge=1, le=1024, description="examples per forward/backward pass (less memory; gradients accumulate)"
    )
    max_length: int = Field(384, ge=16, le=32768, description="tokens per training example (prompt + answer)")
    lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA alpha (scale alpha/rank)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    lora_targets: str = Field("all-linear", description="'all-linear' or comma-separated module names")
    lora_layers: str = Field(
        "all", description="decoder layers with adapters: all, A-B, top:K or a list (fewer layers: faster backward)"
    )
    checkpoint_every: int = Field(20, ge=1, description="optimiser steps between checkpoints")
    preference_weight: float = Field(
        0.0, ge=0, le=100,
        description="weight of the odds-ratio term that makes the model's own censored answers to train "
        "prompts less likely than the gold answers (0: likelihood training only)",
    )  # fmt: skip
    retain_kl_weight: float = Field(
        0.0, ge=0, le=100,
        description="weight of KL(original || tuned) on the model's own retained answers (holds harmless "
        "behaviour in place; 0: likelihood of those answers only)",
    )  # fmt: skip
    retain_harmful: bool = Field(
        False,
        description="also ask the original model the harmful train prompts and keep its own refusals as "
        "retained answers (likelihood, and the retained KL when weighted): holds its safety refusals",
    )
    reject_fabrication: bool = Field(
        False,
        description="also reject the original model's fabricated answers to train prompts (stating none of "
        "the documented facts), not only its censored ones (needs --preference-weight)",
    )
    preference_probes: int = Field(
        144, ge=1, le=100_000, description="train-split sensitive prompts asked for censored answers to reject"
    )
    fact_weight: float = Field(
        1.0, ge=1, le=20,
        description="loss weight of the gold-answer tokens that spell one of the probe's documented facts "
        "(the rest weigh 1): more of the training signal on the facts the model must recall",
    )  # fmt: skip

    resumable_changes: ClassVar[frozenset[str]] = frozenset(
        {"batch_size", "device", "verify", "checkpoint_every", "micro_batch_size"}
    )

    @model_validator(mode="after")
    def _rejection_needs_the_term(self) -> FinetuneSettings:
        if self.reject_fabrication and self.preference_weight <= 0:
            raise ValueError("--reject-fabrication needs --preference-weight > 0 (it widens the preference term)")
        return self

    def lora_options(self, n_layers: int) -> Any:
        from unredact.finetune.train import LoraOptions, parse_layers

        targets = self.lora_targets.strip()
        names = tuple(x.strip() for x in targets.split(",") if x.strip())
        return LoraOptions(
            self.lora_rank,
            self.lora_alpha,
            self.lora_dropout,
            targets if targets == "all-linear" else names,
            parse_layers(self.lora_layers, n_layers),
        )

    def train_options(self) -> Any:
        from unredact.finetune.train import TrainOptions

        return TrainOptions(
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.train_batch_size,
            micro_batch_size=self.micro_batch_size,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            preference_weight=self.preference_weight,
            retain_kl_weight=self.retain_kl_weight,
        )


def run_finetune(model_spec: str = "demo/qwen2.5-coder-0.5b", out_dir: Path | str = "runs/finetune", **options: Any):
    """Fine-tune away political censorship (LoRA SFT on gold answers); see the module doc.

    ``options`` are further :class:`FinetuneSettings` fields. Re-running the same command resumes.
    """
    return _run(validate_settings(FinetuneSettings, {"model": model_spec, **options}), Path(out_dir))


def retain_kinds(harmful: bool) -> list[str]:
    """Kinds of train prompts whose own answers are retained (harmful ones: only the refusals are kept)."""
    return [*RETAIN_KINDS, "harmful"] if harmful else list(RETAIN_KINDS)


def retain_probes(probes: list[Probe], kinds: Sequence[str] = RETAIN_KINDS) -> list[Probe]:
    """Train-split probes of ``kinds``: the model's own answers to them are kept as they are."""
    return [p for p in probes if p.split == "train" and p.kind in kinds]


def _gold_sha(spec: str) -> str:
    from unredact.finetune.gold import resolve_gold_path

    return sha256_file(resolve_gold_path(spec))


def preference_probes(probes: list[Probe], gold: list[Any], n: int) -> list[Probe]:
    """Up to ``n`` train-split sensitive probes with gold answers (whole questions, topics round-robin)."""
    from unredact.probes.loader import select_balanced

    with_gold = {g.probe.id for g in gold}
    return select_balanced([p for p in probes if p.id in with_gold], kind="sensitive", split="train", n=n)


def build_examples(
    s: FinetuneSettings,
    gold: list[Any],
    retain_rows: list[dict[str, Any]],
    rejected_rows: list[dict[str, Any]] | None = None,
) -> list[Example]:
    from unredact.finetune.data import attach_rejected, gold_examples, rejected_kind, rejected_labels, retain_examples

    retained, dropped = retain_examples(retain_rows)
    harmful_ids = {str(r["id"]) for r in retain_rows if r.get("kind") == "harmful"}
    own_refusals = sum(e.key in harmful_ids for e in retained)
    examples = gold_examples(gold, s.harmful_repeat) + retained
    pairs = 0
    if rejected_rows is not None:
        examples, pairs = attach_rejected(examples, rejected_rows, rejected_labels(s.reject_fabrication))
    counts = {src: sum(e.source == src for e in examples) for src in ("gold", "refusal", "retain")}
    console.print(
        f"training examples: {counts['gold']} candid gold answers ({pairs} with a "
        f"{rejected_kind(s.reject_fabrication)} answer to reject), "
        f"{counts['refusal']} refusals of harmful requests, {counts['retain']} of the model's own answers "
        f"({own_refusals} of them its refusals of harmful requests; {dropped} answers dropped)"
    )
    return examples


def train_stage(backend: HFBackend, s: FinetuneSettings, examples: list[Example], out: Path) -> dict[str, Any]:
    """Attach LoRA, train (resumably) or reload the finished adapter, and return the training record."""
    from unredact.finetune.data import tokenize
    from unredact.finetune.train import attach_lora, load_adapter_state, train
    from unredact.whitebox.arch import arch_from_text, decoder_layers

    arch = arch_from_text(backend.model, s.arch)
    peft_model = attach_lora(backend.model, s.lora_options(len(decoder_layers(backend.model, arch))), s.seed, arch)
    done_path, adapter = out / TRAIN_DONE, out / ADAPTER_DIR
    gold_sha = _gold_sha(s.gold)
    if done_path.is_file() and (adapter / ADAPTER_WEIGHTS).is_file():
        record: dict[str, Any] = json.loads(done_path.read_text(encoding="utf-8"))
        if record.get("gold_sha256") != gold_sha:
            raise UnredactError(f"{s.gold}: gold answers changed since {out} was trained; use another --out")
        load_adapter_state(peft_model, adapter / ADAPTER_WEIGHTS)
        console.print(f"[green]adapter already trained: {adapter}[/]")
    else:
        data = tokenize(
            examples, backend.tokenizer, system_prompt=s.system_prompt, max_length=s.max_length,
            fact_weight=s.fact_weight,
        )  # fmt: skip
        pad = int(backend.tokenizer.pad_token_id or 0)
        result: TrainResult = train(peft_model, data, pad, s.train_options(), out / TRAIN_DIR)
        with atomic_dir(adapter, overwrite=True) as tmp:
            peft_model.save_pretrained(str(tmp))
        record = {
            **asdict(result),
            "sources": {src: sum(e.source == src for e in examples) for src in ("gold", "refusal", "retain")},
            "preference_pairs": sum(e.rejected is not None for e in examples),
            "gold_sha256": gold_sha,
            "adapter_sha256": sha256_file(adapter / ADAPTER_WEIGHTS),
        }
        atomic_write_json(done_path, record)
    merged = peft_model.merge_and_unload()
    backend.model = backend.engine.model = merged
    return record


def export_stage(backend: HFBackend, out: Path, card: str, adapter_sha: str) -> float:
    """Export the merged model (of the adapter with hash ``adapter_sha``) and check it reloads identically."""
    from unredact.whitebox.export import export_checked

    model_dir = out / MODEL_DIR
    marker = out / EXPORT_CHECK
    if marker.is_file() and (model_dir / "config.json").is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("adapter_sha256") == adapter_sha:
            console.print(f"[green]merged model already exported to {model_dir}[/]")
            return float(done["reload_max_abs_diff"])
    diff = export_checked(backend, model_dir, card)
    atomic_write_json(
        marker, {"adapter_sha256": adapter_sha, "reload_max_abs_diff": diff, "files": weight_hashes(model_dir)}
    )
    return diff


def _run(s: FinetuneSettings, out: Path) -> dict[str, Any]:
    from unredact.finetune.card import finetune_card
    from unredact.finetune.gold import load_gold
    from unredact.probes.loader import load_probes
    from unredact.whitebox.remove import (
        Stages,
        check_local,
        check_run_settings,
        eval_probes,
        load_local_backend,
        peak_rss_mb,
        run_audit,
        verify_stage,
    )

    check_local(s.model)
    probes = load_probes(s.probes)
    gold = load_gold(s.gold, probes)  # a bad gold file fails before anything is written
    stages = Stages()
    with run_lock(out):  # creates out; a second process on the same --out gets a clear error
        check_run_settings(out, s, SETTINGS_FILE)
        probe_file = out / EVAL_PROBES
        write_probe_file(probe_file, eval_probes(probes, s))
        n = 7 if s.preference_weight > 0 else 6

        stages.start("load", f"loading {s.model}")
        backend = load_local_backend(s)
        stages.start("baseline", f"1/{n} audit of the original model (test split)")
        before = run_audit(
            backend, s, out / "baseline-test", probe_file, split="test", kinds=KINDS_TEST,
            max_new_tokens=s.max_new_tokens, label=s.model,
        )  # fmt: skip
        asked_kinds = retain_kinds(s.retain_harmful)
        stages.start("retain", f"2/{n} the original model's own answers to {'/'.join(asked_kinds)} train prompts")
        retain_set = retain_probes(probes, asked_kinds)
        retained = _own_answers(backend, s, out, "retain", RETAIN_PROBES, retain_set, asked_kinds)
        rejected = None
        if s.preference_weight > 0:
            stages.start("rejected", f"3/{n} the original model's own answers to sensitive train prompts (to reject)")
            asked = preference_probes(probes, gold, s.preference_probes)
            rejected = _own_answers(backend, s, out, "rejected", PREFERENCE_PROBES, asked, ["sensitive"])
        examples = build_examples(s, gold, retained, rejected)

        stages.start("train", f"{n - 3}/{n} LoRA fine-tuning on gold answers")
        trained = train_stage(backend, s, examples, out)

        stages.start("test", f"{n - 2}/{n} audit of the fine-tuned model (test split)")
        after = run_audit(
            backend, s, out / "tuned-test", probe_file, split="test", kinds=KINDS_TEST,
            max_new_tokens=s.max_new_tokens, label=f"{s.model}+lora-sft",
            edit={"lora_sft": trained["adapter_sha256"][:16]},
        )  # fmt: skip

        stages.start("export", f"{n - 1}/{n} export merged safetensors")
        card_args = {"s": s, "before": before, "after": after, "trained": trained}
        diff = export_stage(backend, out, finetune_card(**card_args, reload_diff=None), trained["adapter_sha256"])
        stages.start("card", f"{n}/{n} model card and reproducibility record")
        card_path = out / "MODEL_CARD.md"
        atomic_write_text(card_path, finetune_card(**card_args, reload_diff=diff))
        stages.stop()
        result = {
            "out_dir": str(out),
            "before": before["summary"],
            "after": after["summary"],
            "train": trained,
            "reload_max_abs_diff": diff,
            "seconds": round(time.perf_counter() - stages.started, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "timings": stages.timings,
        }
        atomic_write_json(out / "reproduce.json", reproduce_record(s, backend, result, probe_file, out))
        _print_summary(result, out)
        if s.verify != "none":
            backend.close()
            del backend
            result["verify_passed"] = verify_stage(s, out / MODEL_DIR, out)
        return result


def _own_answers(
    backend: HFBackend,
    s: FinetuneSettings,
    out: Path,
    name: str,
    probe_name: str,
    probes: list[Probe],
    kinds: list[str],
) -> list[dict[str, Any]]:
    """The loaded (original) model's judged answers to train-split ``probes`` (resumable audit in OUT/name,
    probes in OUT/probe_name): the retained answers, or the candidates for rejected answers."""
    from unredact.report.build import rows_from_artifacts
    from unredact.rundir import RunDir
    from unredact.whitebox.remove import run_audit

    path = out / probe_name
    write_probe_file(path, probes)
    run_audit(
        backend, s, out / name, path, split="train", kinds=kinds, max_new_tokens=s.retain_max_new_tokens, label=s.model
    )
    return rows_from_artifacts(RunDir(out / name))


def reproduce_record(
    s: FinetuneSettings, backend: HFBackend, result: dict[str, Any], probe_file: Path, out: Path
) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    from unredact.finetune.gold import resolve_gold_path
    from unredact.probes.loader import resolve_probe_path

    return {
        "unredact": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "command": ["unredact", *sys.argv[1:]],
        "reproduce": reproduce_command(s, "finetune"),
        "settings": public_settings(s),
        "seed": s.seed,
        "model": {k: v for k, v in backend.describe().items() if k != "origin"},
        "probes": {"file": s.probes, "sha256": sha256_file(resolve_probe_path(s.probes))},
        "eval_probes_sha256": sha256_file(probe_file),
        "gold": {"file": Path(s.gold).name, "sha256": sha256_file(resolve_gold_path(s.gold))},
        "train": result["train"],
        "exported": json.loads((out / EXPORT_CHECK).read_text(encoding="utf-8")),
        "session_timings_s": result["timings"],
        "session_seconds": result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _print_summary(r: dict[str, Any], out: Path) -> None:
    from unredact.whitebox.card import pct

    b, a = r["before"], r["after"]
    console.print(
        f"[bold green]done[/] in {r['seconds']:.0f} s (peak RSS {r['peak_rss_mb']:.0f} MB): censorship index "
        f"{pct(b['censorship_index'])} -> {pct(a['censorship_index'])}, fabrication "
        f"{pct(b['fabrication_rate'])} -> {pct(a['fabrication_rate'])}, harmful refused "
        f"{pct(b['harmful_refusal_rate'])} -> {pct(a['harmful_refusal_rate'])}; model in {out / MODEL_DIR}, "
        f"adapter in {out / ADAPTER_DIR}, card {out / 'MODEL_CARD.md'}"
    )

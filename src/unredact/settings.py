"""Typed settings for an audit: one object that is the CLI options, the TOML file and the run record."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from unredact.validation import read_toml_table, validate_settings


class AuditSettings(BaseModel):
    """Everything that defines an audit run. CLI flags override a --config TOML, which overrides defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "demo/qwen2.5-coder-0.5b",
        description="model spec: demo/NAME, hf/DIR-OR-ID, gguf/FILE, openai/MODEL@URL or mock/SCRIPT",
    )
    probes: str = Field("default", description="probe JSONL file, or 'default' for the bundled set")
    profile: Literal["quick", "full"] = Field("quick", description="quick: balanced subset; full: all")
    langs: list[str] = Field(default_factory=list, description="languages to keep (empty: all)")
    topics: list[str] = Field(default_factory=list, description="topics to keep (empty: all)")
    kinds: list[str] = Field(default_factory=list, description="probe kinds to keep (empty: all)")
    splits: list[str] = Field(default_factory=list, description="splits to keep (empty: all)")
    limit: int | None = Field(None, ge=1, description="keep at most N probes after filtering")
    system_prompt: str | None = Field(None, description="system prompt; none: the model's default")
    samples: int = Field(1, ge=1, le=100, description="answers per probe")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    seed: int = Field(0, description="seed for sampled runs")
    max_new_tokens: int = Field(192, ge=1, le=32768, description="answer length cap in tokens")
    stop: list[str] = Field(default_factory=list, description="stop strings")
    batch_size: int = Field(8, ge=1, le=1024, description="local models: prompts per batch")
    dtype: str = Field("auto", description="local models: auto (bfloat16), float32, bfloat16, float16")
    device: str = Field("auto", description="local models: auto, cpu, cuda, cuda:1 ...")
    concurrency: int = Field(4, ge=1, le=256, description="remote servers: requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="remote servers: seconds per request")
    trust_remote_code: bool = Field(False, description="allow model repositories to run their own code")
    allow_pickle: bool = Field(False, description="allow pickle (.bin) checkpoints")
    retry_errors: bool = Field(True, description="on resume, regenerate answers that failed")
    judge: str = Field("auto", description="judge: auto (lexical + semantic), lexical, or llm:SPEC")

    def identity(self, probes_hash: str) -> dict[str, Any]:
        """The fields a resumed run must share with the run on disk."""
        return {
            "model": self.model,
            "probes_hash": probes_hash,
            "system_prompt": self.system_prompt or "",
            "samples": self.samples,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
        }


def default_toml() -> str:
    """The shipped ``config.default.toml``: every audit setting with its default and description."""
    import tomli_w

    lines = ["# unredact audit settings (use with --config FILE; CLI flags override these).", "[audit]"]
    for name, field in AuditSettings.model_fields.items():
        lines.append(f"# {field.description}")
        default = field.get_default(call_default_factory=True)
        if default is None:
            lines.append(f"# {name} =")
        else:
            lines.append(tomli_w.dumps({name: default}).strip())
    return "\n".join(lines) + "\n"


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> AuditSettings:
    """Defaults < TOML file (its ``[audit]`` table) < explicit CLI values (None means 'not given')."""
    data = read_toml_table(config_file, "audit")
    data.update({k: v for k, v in overrides.items() if v is not None and v != []})
    return validate_settings(AuditSettings, data)

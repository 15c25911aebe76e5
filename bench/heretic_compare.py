"""Side-by-side benchmark: heretic-llm (directional ablation + Optuna, the state-of-the-art peer) vs `unredact remove`.

Both edits of the same local model are judged by unredact's judge on exactly the same test-split probes
that the unredact run audited (its ``eval_probes.jsonl``). heretic is only driven as a separate program
from its own virtual environment (it is never imported here); its prompt sets are unredact's bundled
probes: "bad" = sensitive train probes, "good" = harmless train probes, evaluation = the dev split. No
test-split prompt ever reaches heretic.

Usage:
    .venv/bin/python bench/heretic_compare.py --model demo/qwen2.5-coder-0.5b \
        --unredact-run runs/remove-demo --trials 8 --out runs/bench/heretic-0.5b
Flags: --dry-run (venv + prompt files + config only; prints the heretic command), --skip-heretic (judge an
existing OUT/model again), --full-test (also the original and both edits on the whole test split, in
OUT/full-test/), --max-new-tokens (override the audit answer length; rows then stop being comparable
with the unredact run's reports), --set KEY=TOML_VALUE (any further heretic config key).
Outputs in OUT: heretic.log, heretic-work/ (config.toml, prompt files, study), model/, audit-test/,
compare.json, compare.md.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from unredact.errors import UnredactError
from unredact.models.loader import resolve_model
from unredact.probes.loader import load_probes, select_balanced
from unredact.probes.schema import Probe
from unredact.whitebox.remove import KINDS_TEST

HERETIC_VERSION = "1.4.0"
TORCH_VERSION = "2.13.0"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = ROOT / "runs" / "bench" / "heretic-venv"
TIME_BIN = "/usr/bin/time"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MENU_ITEM = re.compile(r"^\[(\d+)\] (.*)$", re.M)
TRIAL_ITEM = re.compile(r"\[Trial\s+(\d+)\] Refusals:\s*(\d+)/(\d+), KL divergence: ([0-9.eE+-]+)")
MAX_ANSWERS = 12  # menu answers before we assume heretic is looping on input it rejects


class BenchError(UnredactError):
    """A benchmark step failed; the message says what to look at."""


def log(msg: str) -> None:
    print(f"[heretic-compare] {msg}", file=sys.stderr, flush=True)


# ---- 1. heretic's own virtual environment ---------------------------------------------------------


def _venv_versions(venv: Path) -> tuple[str, str] | None:
    py = venv / "bin" / "python"
    if not py.is_file():
        return None
    code = "import importlib.metadata as m; print(m.version('torch')); print(m.version('heretic-llm'))"
    res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=_clean_env())
    lines = res.stdout.split()
    return (lines[0], lines[1]) if res.returncode == 0 and len(lines) == 2 else None


def _clean_env() -> dict[str, str]:
    """The environment without this process's virtual environment (heretic runs in its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    own_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != own_bin)
    return env


def ensure_venv(venv: Path) -> Path:
    """Create ``venv`` (torch==TORCH_VERSION first, then heretic-llm==HERETIC_VERSION); return the heretic program."""
    heretic = venv / "bin" / "heretic"
    versions = _venv_versions(venv)
    if versions is None or not heretic.is_file():
        log(f"creating heretic's venv in {venv} (torch=={TORCH_VERSION} first, then heretic-llm=={HERETIC_VERSION})")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, env=_clean_env())
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        for pkgs in ([f"torch=={TORCH_VERSION}"], [f"heretic-llm=={HERETIC_VERSION}", f"torch=={TORCH_VERSION}"]):
            res = subprocess.run([*pip, *pkgs], env=_clean_env())
            if res.returncode != 0:
                raise BenchError(f"pip install {' '.join(pkgs)} into {venv} failed (exit {res.returncode})")
        versions = _venv_versions(venv)
    if versions is None or not heretic.is_file():
        raise BenchError(f"{venv} has no working heretic-llm installation; delete it and run again")
    torch_v, heretic_v = versions
    if torch_v.split("+")[0] != TORCH_VERSION:
        raise BenchError(
            f"{venv} has torch {torch_v}, not {TORCH_VERSION} (heretic's install changed it); delete {venv} and run "
            f"again, or pip install torch=={TORCH_VERSION} into it"
        )
    if heretic_v != HERETIC_VERSION:
        raise BenchError(f"{venv} has heretic-llm {heretic_v}, not {HERETIC_VERSION}; delete {venv} and run again")
    log(f"heretic venv ok: heretic-llm {heretic_v}, torch {torch_v}")
    return heretic


def heretic_default(venv: Path, key: str) -> Any:
    """One default setting of the installed heretic, read in its own venv (nothing of heretic is imported here)."""
    code = (
        f"import json; from heretic.config import Settings; print(json.dumps(Settings.model_fields[{key!r}].default))"
    )
    res = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=_clean_env())
    if res.returncode != 0:
        raise BenchError(f"cannot read heretic's default {key}: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout)


# ---- 2.-4. prompt files and config ---------------------------------------------------------------


@dataclass
class RunInfo:
    """What the benchmark needs from the `unredact remove` run it compares against."""

    path: Path
    settings: dict[str, Any]
    reproduce: dict[str, Any]
    chosen_trial: int
    eval_probes: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunInfo:
        need = ["eval_probes.jsonl", "reproduce.json", "selection.json", "baseline-test/report.json"]
        missing = [n for n in need if not (path / n).is_file()]
        if missing:
            raise BenchError(f"{path} is not a finished `unredact remove` run (missing {', '.join(missing)})")
        reproduce = json.loads((path / "reproduce.json").read_text(encoding="utf-8"))
        chosen = int(json.loads((path / "selection.json").read_text(encoding="utf-8"))["chosen_trial"])
        if not (path / f"edited-test-trial-{chosen}" / "report.json").is_file():
            raise BenchError(f"{path}/edited-test-trial-{chosen}/report.json is missing (chosen trial {chosen})")
        lines = (path / "eval_probes.jsonl").read_text(encoding="utf-8").splitlines()
        probes = [json.loads(line) for line in lines if line.strip()]
        return cls(path, reproduce["settings"], reproduce, chosen, probes)

    def report(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / name / "report.json").read_text(encoding="utf-8"))
        return data


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_prompt_files(
    probes: list[Probe], prompt_dir: Path, *, eval_sensitive: int, eval_harmless: int | None, max_train: int | None
) -> dict[str, dict[str, Any]]:
    """heretic's four prompt sets as one-prompt-per-line text files (train and dev splits only)."""
    train_bad = [p for p in probes if p.kind == "sensitive" and p.split == "train"]
    train_good = [p for p in probes if p.kind == "harmless" and p.split == "train"]
    if max_train:
        train_bad = select_balanced(probes, kind="sensitive", split="train", n=max_train)
        train_good = select_balanced(probes, kind="harmless", split="train", n=max_train)
    dev_bad = select_balanced(probes, kind="sensitive", split="dev", n=eval_sensitive)
    dev_good = [p for p in probes if p.kind == "harmless" and p.split == "dev"]
    if eval_harmless:
        dev_good = select_balanced(probes, kind="harmless", split="dev", n=eval_harmless)
    sets = {"bad_prompts": train_bad, "good_prompts": train_good}
    sets |= {"bad_evaluation_prompts": dev_bad, "good_evaluation_prompts": dev_good}
    prompt_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    for key, items in sets.items():
        if not items:
            raise BenchError(f"no probes for heretic's {key}")
        if any(p.split == "test" for p in items):  # never happens by construction; the guarantee is checked
            raise BenchError(f"test-split probes in heretic's {key}")
        path = prompt_dir / f"{key}.txt"
        path.write_text("".join(_one_line(p.prompt) + "\n" for p in items), encoding="utf-8")
        langs: dict[str, int] = {}
        for p in items:
            langs[p.lang] = langs.get(p.lang, 0) + 1
        out[key] = {"file": str(path), "n": len(items), "split": items[0].split, "kind": items[0].kind, "langs": langs}
    return out


def model_dtype(model_dir: Path) -> str:
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "float32"


def parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=TOML_VALUE`` pairs (a value that is not valid TOML is taken as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def heretic_config(
    args: argparse.Namespace, model_dir: Path, prompt_sets: dict[str, dict[str, Any]], work: Path, run: RunInfo
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model": str(model_dir),
        "dtypes": [model_dtype(model_dir)],
        "batch_size": args.batch_size,  # 0 = heretic's automatic search, very slow on CPU
        "n_trials": args.trials,
        # heretic's default spends 60 of its 200 trials on random exploration; keep that share at any --trials
        "n_startup_trials": max(1, round(args.trials * 0.3)),
        "seed": args.seed,
        "study_checkpoint_dir": str(work / "checkpoints"),
        "export_strategy": "merge",
    }
    if run.settings.get("system_prompt"):
        cfg["system_prompt"] = run.settings["system_prompt"]
    if args.markers == "multilingual":
        # heretic's markers are English; add unredact's zh/fr refusal openings so it can see those refusals
        from unredact.whitebox.objectives import REFUSAL_OPENINGS

        base = [str(m) for m in heretic_default(args.venv, "refusal_markers")]
        extra = [s.lower() for lang, group in REFUSAL_OPENINGS.items() if lang != "en" for s in group]
        cfg["refusal_markers"] = list(dict.fromkeys(base + extra))
    for key, info in prompt_sets.items():
        cfg[key] = {"dataset": info["file"]}
    cfg |= parse_set(args.set)
    return cfg


# ---- 4. running heretic through its stdin menus ---------------------------------------------------


@dataclass
class HereticOutcome:
    seconds: float
    peak_rss_mb: float | None
    returncode: int
    chosen: dict[str, Any]
    pareto: list[dict[str, Any]]
    base_refusals: str | None
    answers: list[str]


class MenuDriver:
    """Answers heretic's plain-stdin menus (KAGGLE_KERNEL_RUN_TYPE set): pick a Pareto trial, save merged, exit."""

    def __init__(self, save_dir: Path, max_kl: float | None) -> None:
        self.save_dir, self.max_kl = save_dir, max_kl
        self.saved = False
        self.chosen: dict[str, Any] = {}
        self.pareto: list[dict[str, Any]] = []
        self.answers: list[str] = []

    def respond(self, text: str) -> str | None:
        """The answer to the prompt ``text`` ends with, None if it does not end with a prompt yet."""
        text = ANSI.sub("", text)
        if "Model saved to" in text:
            self.saved = True
        tail = text.rstrip()
        if tail.endswith("Path to the folder::") or tail.endswith("Path to the folder:"):
            return str(self.save_dir)
        if not tail.endswith("Enter number:"):
            return None
        items = MENU_ITEM.findall(text)
        first = MENU_ITEM.search(text)
        header = [ln.strip() for ln in text[: first.start()].splitlines() if ln.strip()] if first else []
        question = header[-1] if header else ""
        options = {title.strip(): int(num) for num, title in items}

        def option(prefix: str) -> str:
            for title, num in options.items():
                if title.startswith(prefix):
                    return str(num)
            raise BenchError(f"heretic's menu {question!r} has no option starting with {prefix!r}")

        if "Which trial do you want to use" in question:
            if self.saved:
                return option("Exit program")
            return self._pick_trial(items)
        if "What do you want to do with the decensored model" in question:
            if self.saved:
                return option("Return to the trial selection menu")
            return option("Save the model to a local folder")
        if "How do you want to export the model" in question:
            return option("Merge")
        if "How would you like to proceed" in question:
            return option("Ignore the previous run")
        raise BenchError(f"unexpected heretic menu {question!r} with options {list(options)}")

    def _pick_trial(self, items: list[tuple[str, str]]) -> str:
        trials = []
        for num, title in items:
            m = TRIAL_ITEM.search(title)
            if m:
                trials.append(
                    {
                        "menu": int(num),
                        "trial": int(m[1]),
                        "refusals": int(m[2]),
                        "n_eval": int(m[3]),
                        "kl": float(m[4]),
                    }
                )
        if not trials:
            raise BenchError("heretic's trial menu lists no trial")
        self.pareto = trials  # heretic sorts its Pareto front by refusals, then KL
        pick = trials[0]
        if self.max_kl is not None:
            ok = [t for t in trials if t["kl"] <= self.max_kl]
            pick = ok[0] if ok else min(trials, key=lambda t: t["kl"])
        self.chosen = pick
        return str(pick["menu"])


def heretic_env(work: Path, venv: Path) -> dict[str, str]:
    env = _clean_env()
    env |= {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf-home"),
        "KAGGLE_KERNEL_RUN_TYPE": "1",  # heretic then reads its menus from plain stdin
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",  # rich wraps at 80 columns on a pipe, which would split menu lines
        "PATH": f"{venv / 'bin'}{os.pathsep}{_clean_env().get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
    }
    return env


def heretic_command(heretic: Path, time_file: Path) -> list[str]:
    if Path(TIME_BIN).is_file():
        return [TIME_BIN, "-v", "-o", str(time_file), str(heretic)]
    return [str(heretic)]


def _peak_rss_from_time(path: Path) -> float | None:
    if not path.is_file():
        return None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", path.read_text(encoding="utf-8", errors="replace"))
    return round(int(m[1]) / 1024.0, 1) if m else None


def run_heretic(
    cmd: list[str], work: Path, env: dict[str, str], log_path: Path, save_dir: Path, max_kl: float | None
) -> HereticOutcome:
    driver = MenuDriver(save_dir, max_kl)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    since_answer = ""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with log_path.open("w", encoding="utf-8") as logf:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                text = decoder.decode(chunk)
                logf.write(text)
                logf.flush()
                sys.stderr.write(text)
                since_answer += text
                answer = driver.respond(since_answer)
                if answer is None:
                    continue
                if len(driver.answers) >= MAX_ANSWERS:
                    raise BenchError(f"heretic keeps asking (answers so far: {driver.answers})")
                driver.answers.append(answer)
                logf.write(f"\n[heretic-compare answered: {answer}]\n")
                proc.stdin.write((answer + "\n").encode("utf-8"))
                proc.stdin.flush()
                since_answer = ""
    except BenchError as exc:
        proc.kill()
        proc.wait()
        raise BenchError(f"{exc}; could not drive heretic's interactive menu, see {log_path}") from exc
    except BrokenPipeError as exc:
        proc.wait()
        raise BenchError(f"heretic exited while being answered; see {log_path}") from exc
    rc = proc.wait()
    seconds = time.perf_counter() - started
    rss = _peak_rss_from_time(work / "time.txt")
    if rss is None:  # no /usr/bin/time: the largest finished child of this process
        rss = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, 1)
    full = ANSI.sub("", log_path.read_text(encoding="utf-8", errors="replace"))
    m = re.search(r"Initial refusals:\s*(\d+)/(\d+)", full)
    return HereticOutcome(
        seconds=round(seconds, 1),
        peak_rss_mb=rss,
        returncode=rc,
        chosen=driver.chosen,
        pareto=driver.pareto,
        base_refusals=f"{m[1]}/{m[2]}" if m else None,
        answers=driver.answers,
    )


def check_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


# ---- 5. judging with unredact -------------------------------------------------------------------


def judged_audit(
    spec: str, probes: str, kinds: list[str], run: RunInfo, out: Path, max_new_tokens: int, batch_size: int
) -> dict[str, Any]:
    """unredact's audit of ``spec`` on the test split of ``probes``, with the unredact run's settings; its report."""
    from unredact.pipeline import audit_and_report
    from unredact.settings import AuditSettings

    s = run.settings
    settings = AuditSettings(
        model=spec,
        probes=probes,
        profile="full",
        kinds=kinds,
        splits=["test"],
        system_prompt=s.get("system_prompt"),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        dtype=s.get("dtype", "auto"),
        device=s.get("device", "auto"),
        judge=s.get("judge", "auto"),
    )
    audit_and_report(settings, out)
    if not (out / "report.json").is_file():
        raise BenchError(f"the audit wrote no {out / 'report.json'}")
    data: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return data


def audit_model(model_dir: Path, run: RunInfo, out: Path, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """unredact's test audit of ``model_dir`` on the unredact run's test-split probes, same settings."""
    test = [p for p in run.eval_probes if p["split"] == "test" and p["kind"] in KINDS_TEST]
    probe_file = out.parent / "test_probes.jsonl"
    probe_file.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in test), encoding="utf-8")
    data = judged_audit(f"hf/{model_dir}", str(probe_file), list(KINDS_TEST), run, out, max_new_tokens, batch_size)
    if data["summary"]["answers"] != len(test):
        raise BenchError(f"{out}: {data['summary']['answers']} answers for {len(test)} test probes")
    return data


FULL_TEST_KINDS = ("sensitive", "harmful", "harmless")


def full_test_audits(models: dict[str, str], run: RunInfo, out: Path, max_new_tokens: int, batch_size: int) -> dict:
    """Every model on the whole test split (all sensitive, harmful and harmless test probes), so that the
    comparison does not rest on a few dozen answers. Resumable: an audit already done is not redone."""
    probes, rows = run.settings.get("probes", "default"), {}
    for name, spec in models.items():
        log(f"full test split: {name} ({spec})")
        report = judged_audit(spec, probes, list(FULL_TEST_KINDS), run, out / name, max_new_tokens, batch_size)
        rows[name] = metrics(report) | {"mean_fact_coverage": report["summary"].get("mean_fact_coverage")}
    return rows


def common_kl(
    base_spec: str, models: dict[str, Path], run: RunInfo, *, k: int = 4, batch_size: int = 8
) -> dict[str, dict[str, dict[str, float]]]:
    """unredact's first-k-token KL(original || edited) of each model on the harmless test probes (all languages)."""
    from unredact.backends.registry import BackendOptions, load_backend
    from unredact.whitebox.objectives import answer_logprobs, chats_for, kl_first_tokens, teacher_forced_inputs

    probes = [
        p for p in load_probes(run.settings.get("probes", "default")) if p.kind == "harmless" and p.split == "test"
    ]
    if not probes:
        raise BenchError("no harmless test probes for the KL")
    opts = BackendOptions(dtype=run.settings.get("dtype", "auto"), device=run.settings.get("device", "auto"))
    base = load_backend(base_spec, opts)
    chats = chats_for([p.prompt for p in probes], run.settings.get("system_prompt"))
    inputs = teacher_forced_inputs(base, chats, [p.lang for p in probes], k=k, batch_size=batch_size)  # type: ignore[arg-type]
    base_lp = answer_logprobs(base.model, inputs)  # type: ignore[attr-defined]
    base.close()
    del base
    gc.collect()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in models.items():
        b = load_backend(f"hf/{path}", opts)
        model = b.model  # type: ignore[attr-defined]
        out[name] = {
            f"first_{k}": {lang: round(v, 5) for lang, v in kl_first_tokens(base_lp, model, inputs).items()},
            "first_1": {lang: round(v, 5) for lang, v in kl_first_tokens(base_lp, model, inputs, k=1).items()},
            "n_prompts": {"all": float(len(probes))},
        }
        b.close()
        del b, model
        gc.collect()
    return out


# ---- 6. the comparison ----------------------------------------------------------------------------


def metrics(report: dict[str, Any]) -> dict[str, Any]:
    s = report["summary"]
    sens = next((k for k in report.get("by_kind", []) if k.get("kind") == "sensitive"), None)
    return {
        "censorship_index": s.get("censorship_index"),
        "candid": s.get("candid_rate"),
        "fabrication": s.get("fabrication_rate"),
        "state_narrative": sens["classes"].get("state_narrative") if sens else None,
        "harmful_refusal": s.get("harmful_refusal_rate"),
        "control_censorship": s.get("control_censorship_index"),
        "answers": s.get("answers"),
        "errors": s.get("errors"),
    }


def _journal_span(path: Path) -> float | None:
    """Seconds from the first trial start to the last trial completion in an Optuna journal."""
    if not path.is_file():
        return None
    stamps: list[datetime] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        for key in ("datetime_start", "datetime_complete"):
            if row.get(key):
                stamps.append(datetime.fromisoformat(row[key]))
    return (max(stamps) - min(stamps)).total_seconds() if len(stamps) >= 2 else None


def unredact_cost(run: RunInfo, override: float | None) -> tuple[float | None, float | None, list[str]]:
    """Wall time and peak RSS of the unredact run, with notes when the record does not cover the whole run."""
    r, notes = run.reproduce, []
    rss = r.get("peak_rss_mb")
    if override is not None:
        return override, rss, ["unredact wall time given with --unredact-seconds"]
    seconds = r.get("seconds", r.get("session_seconds"))
    timings = r.get("timings_s") or r.get("session_timings_s") or r.get("timings") or {}
    if seconds is None and timings:
        seconds = round(sum(float(v) for v in timings.values()), 1)
    span = _journal_span(run.path / "search.journal")
    search_s = float(timings.get("search", 0.0)) if timings else None
    if span is not None and search_s is not None and span > search_s + 60:
        notes.append(
            f"the unredact run was resumed: its record holds only the last session ({seconds} s, search "
            f"{search_s} s), while its search trials alone spanned {span:.0f} s; wall time reported as n/a "
            "(pass --unredact-seconds with a measured total)"
        )
        notes.append("unredact peak RSS is the last session's")
        return None, rss, notes
    return (float(seconds) if seconds is not None else None), rss, notes


def _rate(v: Any) -> str:
    if not isinstance(v, dict) or v.get("rate") is None:
        return "n/a"
    return f"{100 * float(v['rate']):.0f}% ({v.get('k')}/{v.get('n')})"


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def render_markdown(cmp: dict[str, Any]) -> str:
    cols = [
        "wall time (s)",
        "peak RSS (MB)",
        "censorship index (test)",
        "candid",
        "fabrication",
        "state narrative",
        "harmful refusal",
        "control censorship",
        "KL (own)",
        f"KL first {cmp['kl_common_k']} tok (common)",
        "KL first tok (common)",
    ]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in ("baseline", "heretic", "unredact"):
        row = cmp["rows"][name]
        m = row["metrics"]
        common = row.get("kl_common") or {}
        cells = [
            _num(row.get("seconds")),
            _num(row.get("peak_rss_mb"), "{:.0f}"),
            _rate(m["censorship_index"]),
            _rate(m["candid"]),
            _rate(m["fabrication"]),
            _rate(m["state_narrative"]),
            _rate(m["harmful_refusal"]),
            _rate(m["control_censorship"]),
            _num(row.get("kl_own"), "{:.4f}"),
            _num(common.get(f"first_{cmp['kl_common_k']}", {}).get("all"), "{:.4f}"),
            _num(common.get("first_1", {}).get("all"), "{:.4f}"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratio = cmp.get("time_ratio_heretic_over_unredact")
    out = [
        f"# heretic-llm {HERETIC_VERSION} vs unredact remove: {cmp['model']}",
        "",
        *lines,
        "",
        f"Time ratio heretic / unredact: {_num(ratio, '{:.2f}x')}",
        "",
        f"- Judged by unredact's judge ({cmp['judge_label']}) on the {cmp['test_probes']} test-split probes of "
        f"`{cmp['unredact_run']}/eval_probes.jsonl`, "
        f"max_new_tokens {cmp['max_new_tokens']}, dtype {cmp['dtype']}.",
        f"- heretic: n_trials {cmp['heretic']['trials']}; picked trial {cmp['heretic']['chosen'].get('trial')} "
        f"(refusals {cmp['heretic']['chosen'].get('refusals')}/{cmp['heretic']['chosen'].get('n_eval')} on its dev "
        f"prompts, initially {cmp['heretic']['base_refusals']}); its KL is first-token KL on harmless dev prompts "
        "under its own system prompt.",
        f"- unredact: trial {cmp['unredact']['chosen_trial']}; its KL is the first-"
        f"{cmp['unredact']['kl_tokens']}-token KL on harmless train prompts from its search.",
    ]
    if cmp["rows"]["heretic"].get("kl_common"):
        out.append(
            "- Common KL: unredact.whitebox.objectives first-token KL(original || edited) on all harmless test probes, "
            "teacher-forced on the original's greedy answer, for both edits."
        )
    if cmp.get("full_test"):
        out += ["", *render_full_test(cmp["full_test"])]
    out += [f"- {n}" for n in cmp["notes"]]
    return "\n".join(out) + "\n"


def render_full_test(rows: dict[str, dict[str, Any]]) -> list[str]:
    n = (rows.get("baseline") or {}).get("censorship_index", {}).get("n")
    lines = [
        f"Whole test split ({n} sensitive questions, all harmful and harmless test probes, same judge and length):",
        "",
        "| | censorship index | candid | fabrication | harmful refusal | mean fact coverage |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        cells = [_rate(m[k]) for k in ("censorship_index", "candid", "fabrication", "harmful_refusal")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_num(m.get('mean_fact_coverage'), '{:.3f}')} |")
    return [*lines, ""]


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="demo/NAME or hf/DIR (default: the unredact run's model)")
    ap.add_argument("--unredact-run", type=Path, required=True, help="finished `unredact remove` run directory")
    ap.add_argument("--out", type=Path, required=True, help="output directory (e.g. runs/bench/heretic-0.5b)")
    ap.add_argument("--trials", type=int, default=8, help="heretic n_trials")
    ap.add_argument("--batch-size", type=int, default=8, help="heretic batch_size (0 = its slow automatic search)")
    ap.add_argument("--seed", type=int, default=0, help="heretic seed")
    ap.add_argument(
        "--eval-prompts",
        type=int,
        default=None,
        help="sensitive dev prompts for heretic's evaluation (default: the unredact run's eval_sensitive)",
    )
    ap.add_argument(
        "--eval-harmless", type=int, default=None, help="harmless dev prompts for heretic's KL (default all)"
    )
    ap.add_argument("--max-train", type=int, default=None, help="cap each train prompt set (default: all)")
    ap.add_argument(
        "--markers",
        choices=["multilingual", "heretic"],
        default="multilingual",
        help="refusal markers: heretic's defaults plus unredact's zh/fr refusal openings, or defaults only",
    )
    ap.add_argument(
        "--heretic-max-kl",
        type=float,
        default=None,
        help="pick the fewest-refusal Pareto trial with KL "
        "<= this (default: heretic's first Pareto trial, i.e. fewest refusals)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra heretic config (TOML value)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="heretic's own venv")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="override the audit answer length (testing)")
    ap.add_argument("--audit-batch-size", type=int, default=8)
    ap.add_argument("--unredact-seconds", type=float, default=None, help="measured total wall time of the unredact run")
    ap.add_argument("--no-kl", action="store_true", help="skip the common KL measurement")
    ap.add_argument(
        "--full-test", action="store_true", help="also judge all three models on the whole test split (slower)"
    )
    ap.add_argument("--dry-run", action="store_true", help="prepare venv, prompt files and config; do not run heretic")
    ap.add_argument("--skip-heretic", action="store_true", help="reuse OUT/model; only judge and compare")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.venv = args.venv.resolve()
    out: Path = args.out.resolve()
    run = RunInfo.load(args.unredact_run.resolve())
    spec = args.model or run.settings["model"]
    notes: list[str] = []
    if spec != run.settings["model"]:
        raise BenchError(f"--model {spec} is not the unredact run's model ({run.settings['model']})")
    kind, _, rest = spec.partition("/")
    if kind not in ("demo", "hf"):
        raise BenchError(f"{spec}: give demo/NAME or hf/DIR (heretic needs a transformers directory)")
    model_dir = Path(resolve_model(kind, rest).path).resolve()
    max_new_tokens = args.max_new_tokens or int(run.settings["max_new_tokens"])
    if max_new_tokens != int(run.settings["max_new_tokens"]):
        notes.append(
            f"max_new_tokens overridden to {max_new_tokens} (the unredact run audited with "
            f"{run.settings['max_new_tokens']}): the heretic row is NOT comparable with the other two"
        )
    work, saved = out / "heretic-work", out / "model"
    out.mkdir(parents=True, exist_ok=True)
    heretic_info: dict[str, Any] = {"trials": args.trials}

    if not args.skip_heretic:
        heretic = ensure_venv(args.venv)
        probes = load_probes(run.settings.get("probes", "default"))
        eval_n = args.eval_prompts or int(run.settings.get("eval_sensitive", 32))
        prompt_sets = write_prompt_files(
            probes, work / "prompts", eval_sensitive=eval_n, eval_harmless=args.eval_harmless, max_train=args.max_train
        )
        cfg = heretic_config(args, model_dir, prompt_sets, work, run)
        (work / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
        cmd = heretic_command(heretic, work / "time.txt")
        env = heretic_env(work, args.venv)
        shown = " ".join(f"{k}={env[k]}" for k in ("HF_HUB_OFFLINE", "KAGGLE_KERNEL_RUN_TYPE", "COLUMNS"))
        log(f"prompt sets: {json.dumps({k: (v['n'], v['split'], v['kind']) for k, v in prompt_sets.items()})}")
        log(f"config: {work / 'config.toml'}")
        log(f"command (cwd {work}): {shown} {' '.join(cmd)}")
        if args.dry_run:
            print(f"cd {work} && {shown} {' '.join(cmd)}")
            return 0
        shutil.rmtree(work / "checkpoints", ignore_errors=True)  # a fresh study (no resume menu)
        shutil.rmtree(saved, ignore_errors=True)
        shutil.rmtree(out / "audit-test", ignore_errors=True)  # answers of an older heretic model
        outcome = run_heretic(cmd, work, env, out / "heretic.log", saved, args.heretic_max_kl)
        if not check_model_dir(saved):
            raise BenchError(
                f"heretic finished (exit {outcome.returncode}) without a merged model in {saved}; "
                f"see {out / 'heretic.log'}"
            )
        if outcome.returncode != 0:
            notes.append(f"heretic exited with {outcome.returncode} after saving the model (see heretic.log)")
        heretic_info |= {
            "seconds": outcome.seconds,
            "peak_rss_mb": outcome.peak_rss_mb,
            "returncode": outcome.returncode,
            "chosen": outcome.chosen,
            "pareto": outcome.pareto,
            "base_refusals": outcome.base_refusals,
            "menu_answers": outcome.answers,
            "prompt_sets": prompt_sets,
            "config": cfg,
        }
        (out / "heretic.json").write_text(json.dumps(heretic_info, indent=2, ensure_ascii=False), encoding="utf-8")
    else:
        if not check_model_dir(saved):
            raise BenchError(f"--skip-heretic: no merged model in {saved}")
        if not (out / "heretic.json").is_file():
            raise BenchError(f"--skip-heretic: {out / 'heretic.json'} (heretic's run record) is missing")
        heretic_info = json.loads((out / "heretic.json").read_text(encoding="utf-8"))

    log(f"judging {saved} on the test split ({max_new_tokens} new tokens)")
    heretic_report = audit_model(saved, run, out / "audit-test", max_new_tokens, args.audit_batch_size)
    base_report, unredact_report = run.report("baseline-test"), run.report(f"edited-test-trial-{run.chosen_trial}")
    if heretic_report.get("judge") != unredact_report.get("judge"):
        notes.append(
            f"judge differs: heretic row {heretic_report.get('judge')}, unredact {unredact_report.get('judge')}"
        )

    kl_common: dict[str, Any] = {}
    if not args.no_kl:
        log("common KL (first tokens, harmless test probes) of both edits")
        kl_common = common_kl(spec, {"heretic": saved, "unredact": run.path / "model"}, run)

    full_test: dict[str, Any] = {}
    if args.full_test:
        models = {"baseline": spec, "heretic": f"hf/{saved}", "unredact": f"hf/{run.path / 'model'}"}
        full_test = full_test_audits(models, run, out / "full-test", max_new_tokens, args.audit_batch_size)

    u_seconds, u_rss, cost_notes = unredact_cost(run, args.unredact_seconds)
    notes += cost_notes
    h_seconds = heretic_info.get("seconds")
    kl_own_unredact = (run.reproduce.get("chosen") or {}).get("kl", {}).get("all")
    if not run.settings.get("system_prompt"):
        notes.append(
            "heretic optimised under its default system prompt; unredact (and every audit) uses the model's own default"
        )
    cmp: dict[str, Any] = {
        "model": spec,
        "model_dir": str(model_dir),
        "unredact_run": str(args.unredact_run),
        "judge": heretic_report.get("judge"),
        "judge_label": ", ".join(map(str, j)) if isinstance(j := heretic_report.get("judge"), list) else str(j),
        "test_probes": heretic_report["summary"]["answers"],
        "max_new_tokens": max_new_tokens,
        "dtype": run.settings.get("dtype"),
        "kl_common_k": 4,
        "heretic": heretic_info | {"version": HERETIC_VERSION},
        "unredact": {"chosen_trial": run.chosen_trial, "kl_tokens": run.settings.get("kl_tokens", 4)},
        "rows": {
            "baseline": {"metrics": metrics(base_report)},
            "heretic": {
                "seconds": h_seconds,
                "peak_rss_mb": heretic_info.get("peak_rss_mb"),
                "kl_own": (heretic_info.get("chosen") or {}).get("kl"),
                "kl_common": kl_common.get("heretic"),
                "metrics": metrics(heretic_report),
            },
            "unredact": {
                "seconds": u_seconds,
                "peak_rss_mb": u_rss,
                "kl_own": kl_own_unredact,
                "kl_common": kl_common.get("unredact"),
                "metrics": metrics(unredact_report),
            },
        },
        "full_test": full_test,
        "time_ratio_heretic_over_unredact": round(h_seconds / u_seconds, 3) if h_seconds and u_seconds else None,
        "notes": notes,
    }
    (out / "compare.json").write_text(json.dumps(cmp, indent=2, ensure_ascii=False), encoding="utf-8")
    md = render_markdown(cmp)
    (out / "compare.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UnredactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

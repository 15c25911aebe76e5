"""Read-only pages: the runs list, one run, its standalone report, and two runs side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from unredact.web import review
from unredact.web.db import User
from unredact.web.deps import get_run, render, require_reader, state
from unredact.web.runs import Item, Run, RunNotFoundError, list_runs, run_file

router = APIRouter()
Reader = Annotated[User | None, Depends(require_reader)]

#: headline metrics of report.json's summary, in the order the runs list shows them
HEADLINE = (
    ("censorship_index", "Censorship index"),
    ("harmful_refusal_rate", "Harmful refused"),
    ("candid_rate", "Candid"),
    ("mean_fact_coverage", "Fact coverage"),
)
# a standalone report may carry inline scripts: run them in an opaque origin, away from the session
REPORT_CSP = "sandbox allow-scripts allow-popups allow-downloads; frame-ancestors 'self'"


def default_pair(runs: list[Run]) -> tuple[str, str]:
    """The two most recently written runs, older first: the usual before/after comparison."""

    def written(run: Run) -> int:
        return max((p.stat().st_mtime_ns for p in run.path.iterdir() if p.is_file()), default=0)

    recent = sorted(runs, key=lambda r: (written(r), r.name))[-2:]
    return (recent[0].name, recent[1].name) if len(recent) == 2 else ("", "")


@router.get("/", response_class=HTMLResponse)
def runs_list(request: Request, _user: Reader) -> Response:
    st = state(request)
    runs = list_runs(st.runs_dir)
    counts = st.store.label_counts()
    pair = default_pair(runs)
    return render(request, "runs.html", runs=runs, counts=counts, headline=HEADLINE, pair=pair)


@router.get("/runs/{run}", response_class=HTMLResponse)
def run_page(request: Request, run: str, user: Reader) -> Response:
    r = get_run(request, run)
    st = state(request)
    labels = review.by_key(st.store.labels(run))
    adjudications = st.store.adjudications(run)
    pending = review.to_adjudicate(r.items.values(), labels)
    progress = {
        "items": len(r.items),
        "labelled": sum(1 for k in r.items if labels.get(k)),
        "double": sum(1 for k in r.items if len(labels.get(k, ())) >= review.LABELS_PER_ITEM),
        "to_adjudicate": sum(1 for p in pending if p.item.key not in adjudications),
        "settled": len(review.final_labels(run, r.items.values(), labels, adjudications)),
    }
    mine = 0
    if user is not None:
        mine = len(review.queue(run, r.items.values(), labels, user.name))
    return render(request, "run.html", run=r, progress=progress, headline=HEADLINE, my_queue=mine)


@router.get("/runs/{run}/report")
def run_report(request: Request, run: str, _user: Reader) -> Response:
    try:
        path = run_file(state(request).runs_dir, run, "report.html")
    except RunNotFoundError:
        raise HTTPException(404, "no such run") from None
    if not path.is_file():
        raise HTTPException(404, f"run {run} has no report.html yet")
    return FileResponse(path, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": REPORT_CSP})


@dataclass(frozen=True)
class CompareRow:
    """One probe (sample 0) in two runs."""

    id: str
    topic: str
    lang: str
    kind: str
    prompt: str
    a: Item | None
    b: Item | None

    @staticmethod
    def _label(item: Item | None) -> str | None:
        return item.verdict.label if item and item.verdict else None

    @property
    def differs(self) -> bool:
        return self._label(self.a) != self._label(self.b)

    def has_verdict(self, label: str) -> bool:
        return label in (self._label(self.a), self._label(self.b))


def compare_rows(a: Run, b: Run) -> list[CompareRow]:
    """Sample 0 of every probe of either run, matched by probe id, in run A's order then B's."""
    first_a = {it.id: it for it in a.items.values() if it.sample == 0}
    first_b = {it.id: it for it in b.items.values() if it.sample == 0}
    rows = []
    for pid in list(first_a) + [p for p in first_b if p not in first_a]:
        ia, ib = first_a.get(pid), first_b.get(pid)
        ref = ia or ib
        assert ref is not None
        rows.append(CompareRow(pid, ref.topic, ref.lang, ref.kind, ref.prompt, ia, ib))
    return rows


@router.get("/compare", response_class=HTMLResponse)
def compare(
    request: Request,
    _user: Reader,
    a: str = "",
    b: str = "",
    topic: str = "",
    lang: str = "",
    kind: str = "",
    verdict: str = "",
    disagree: bool = False,
) -> Response:
    runs = list_runs(state(request).runs_dir)
    names = [r.name for r in runs]
    if not a or not b:
        a, b = default_pair(runs)
        return render(request, "compare.html", names=names, a=a, b=b, rows=None, filters={})
    run_a, run_b = get_run(request, a), get_run(request, b)
    rows = compare_rows(run_a, run_b)
    options = {
        "topic": sorted({r.topic for r in rows if r.topic}),
        "lang": sorted({r.lang for r in rows if r.lang}),
        "kind": sorted({r.kind for r in rows if r.kind}),
        "verdict": sorted({it.verdict.label for r in rows for it in (r.a, r.b) if it and it.verdict}),
    }
    total = len(rows)
    rows = [
        r
        for r in rows
        if (not topic or r.topic == topic)
        and (not lang or r.lang == lang)
        and (not kind or r.kind == kind)
        and (not verdict or r.has_verdict(verdict))
        and (not disagree or r.differs)
    ]
    filters = {"topic": topic, "lang": lang, "kind": kind, "verdict": verdict, "disagree": disagree}
    return render(
        request,
        "compare.html",
        names=names,
        a=a,
        b=b,
        run_a=run_a,
        run_b=run_b,
        rows=rows,
        total=total,
        options=options,
        filters=filters,
    )

"""Review pages: the labelling queue, adjudication, agreement and export of the human labels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from unredact.web import review
from unredact.web.agreement import Pair, confusion, kappa_table
from unredact.web.db import FullItemError, User
from unredact.web.deps import (
    check_csrf,
    get_run,
    render,
    require_adjudicator,
    require_reader,
    require_user,
    state,
)
from unredact.web.runs import CLASS_HELP, CLASSES, Item, Run, RunNotFoundError, run_file

router = APIRouter()
Reader = Annotated[User | None, Depends(require_reader)]
Signed = Annotated[User, Depends(require_user)]
Adjudicator = Annotated[User, Depends(require_adjudicator)]
MAX_NOTE = 4000

FLASH = {
    "saved": "Saved.",
    "skipped": "Skipped: it will come back at the end of your queue.",
    "full": "That item got its two labels from other reviewers meanwhile; yours was not needed.",
    "adjudicated": "Final label saved.",
}


def _item(run: Run, key: str) -> Item:
    item = run.items.get(key)
    if item is None:
        raise HTTPException(400, "no such item in this run")
    return item


def _clean(item: Item, label: str, facts: list[str], note: str) -> tuple[str, list[str], str]:
    if label not in CLASSES:
        raise HTTPException(400, f"pick one class ({', '.join(CLASSES)})")
    chosen = set(facts)
    return label, [f for f in item.facts if f in chosen], note.strip()[:MAX_NOTE]


@router.get("/runs/{run}/label", response_class=HTMLResponse)
def label_page(request: Request, run: str, user: Signed, msg: str = "") -> Response:
    r = get_run(request, run)
    st = state(request)
    records = st.store.labels(run)
    labels = review.by_key(records)
    todo = review.queue(run, r.items.values(), labels, user.name, st.store.skipped(user.id, run))
    item = todo[0] if todo else None
    return render(
        request,
        "label.html",
        run=r,
        item=item,
        remaining=len(todo),
        help=CLASS_HELP,
        mine=sum(1 for lb in records if lb.user == user.name),
        flash=FLASH.get(msg),
        others=len(labels.get(item.key, ())) if item else 0,
    )


@router.post("/runs/{run}/label", dependencies=[Depends(check_csrf)])
def label_submit(
    request: Request,
    run: str,
    user: Signed,
    key: Annotated[str, Form()],
    action: Annotated[str, Form()] = "save",
    label: Annotated[str, Form()] = "",
    facts: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    note: Annotated[str, Form()] = "",
) -> Response:
    r = get_run(request, run)
    item = _item(r, key)
    st = state(request)
    if action == "skip":
        st.store.skip(user.id, run, key)
        msg = "skipped"
    else:
        label, chosen, note = _clean(item, label, facts, note)
        try:
            st.store.save_label(user.id, run, key, label, chosen, note)
            msg = "saved"
        except FullItemError:
            msg = "full"
    return RedirectResponse(f"/runs/{run}/label?msg={msg}", status_code=303)


@router.get("/runs/{run}/adjudicate", response_class=HTMLResponse)
def adjudicate_page(request: Request, run: str, _user: Adjudicator, key: str = "", msg: str = "") -> Response:
    r = get_run(request, run)
    st = state(request)
    pending = review.to_adjudicate(r.items.values(), review.by_key(st.store.labels(run)))
    done = st.store.adjudications(run)
    if key:
        current = next((p for p in pending if p.item.key == key), None)
        if current is None:
            raise HTTPException(404, "this item does not need adjudication")
    else:
        current = next((p for p in pending if p.item.key not in done), None)
    return render(
        request,
        "adjudicate.html",
        run=r,
        pending=pending,
        done=done,
        current=current,
        help=CLASS_HELP,
        open_count=sum(1 for p in pending if p.item.key not in done),
        flash=FLASH.get(msg),
    )


@router.post("/runs/{run}/adjudicate", dependencies=[Depends(check_csrf)])
def adjudicate_submit(
    request: Request,
    run: str,
    user: Adjudicator,
    key: Annotated[str, Form()],
    label: Annotated[str, Form()] = "",
    facts: Annotated[list[str], Form()] = [],  # noqa: B006
    note: Annotated[str, Form()] = "",
) -> Response:
    r = get_run(request, run)
    item = _item(r, key)
    label, chosen, note = _clean(item, label, facts, note)
    state(request).store.adjudicate(user.id, run, key, label, chosen, note)
    return RedirectResponse(f"/runs/{run}/adjudicate?msg=adjudicated", status_code=303)


@router.get("/runs/{run}/agreement", response_class=HTMLResponse)
def agreement_page(request: Request, run: str, _user: Reader, written: int | None = None) -> Response:
    r = get_run(request, run)
    st = state(request)
    records = st.store.labels(run)
    labels = review.by_key(records)
    adjudications = st.store.adjudications(run)
    reviewer_pairs = review.reviewer_pairs(r.items, labels)
    judge_pairs = review.judge_pairs(r.items, labels)
    settled = review.final_labels(run, r.items.values(), labels, adjudications)
    final_vs_judge = [
        Pair(rec["label"], verdict.label, rec["lang"])
        for rec in settled
        if (verdict := r.items[rec["key"]].verdict) is not None
    ]
    counts = {
        "items": len(r.items),
        "labels": len(records),
        "reviewers": len({lb.user for lb in records}),
        "labelled": len(labels),
        "double": len(reviewer_pairs),
        "agreed": sum(p.a == p.b for p in reviewer_pairs),
        "adjudicated": len(adjudications),
        "settled": len(settled),
    }
    cm_classes, cm = confusion(final_vs_judge, CLASSES)
    return render(
        request,
        "agreement.html",
        run=r,
        counts=counts,
        reviewers=kappa_table(reviewer_pairs, CLASSES),
        judge=kappa_table(judge_pairs, CLASSES),
        cm_classes=cm_classes,
        cm=cm,
        written=written,
    )


def _settled(request: Request, r: Run) -> list[dict]:
    st = state(request)
    labels = review.by_key(st.store.labels(r.name))
    return review.final_labels(r.name, r.items.values(), labels, st.store.adjudications(r.name))


@router.get("/runs/{run}/export.jsonl")
def export_download(request: Request, run: str, _user: Reader) -> Response:
    r = get_run(request, run)
    return PlainTextResponse(
        review.to_jsonl(_settled(request, r)),
        media_type="application/jsonl; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{r.name}.human_labels.jsonl"'},
    )


@router.post("/runs/{run}/export", dependencies=[Depends(check_csrf)])
def export_write(request: Request, run: str, _user: Adjudicator) -> Response:
    r = get_run(request, run)
    records = _settled(request, r)
    try:
        path = run_file(state(request).runs_dir, run, review.HUMAN_LABELS_FILE)
    except RunNotFoundError:
        raise HTTPException(404, "no such run") from None
    review.write_atomic(path, review.to_jsonl(records))
    return RedirectResponse(f"/runs/{run}/agreement?written={len(records)}", status_code=303)

"""Request-level helpers shared by the pages: app state, the current user, access checks, CSRF, rendering."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from unredact.web.auth import LoginLimiter, SessionCodec, csrf_ok
from unredact.web.db import Store, User
from unredact.web.runs import Run, RunNotFoundError, load_run


@dataclass
class AppState:
    runs_dir: Path
    store: Store
    codec: SessionCodec
    templates: Jinja2Templates
    open_readonly: bool = False
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    chat_models: list[str] = field(default_factory=list)
    chat_backends: dict[str, Any] = field(default_factory=dict)


class LoginRequiredError(Exception):
    """Raised by pages that need a signed-in user; answered with a redirect to the login form."""


def state(request: Request) -> AppState:
    return request.app.state.unredact


def session(request: Request) -> dict[str, Any]:
    return request.state.session


def set_session(request: Request, data: dict[str, Any]) -> None:
    request.state.session = data
    request.state.session_changed = True


def current_user(request: Request) -> User | None:
    if not hasattr(request.state, "user"):
        uid = session(request).get("uid")
        request.state.user = state(request).store.user_by_id(uid) if isinstance(uid, int) else None
    return request.state.user


def is_local_client(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_user(request: Request) -> User:
    user = current_user(request)
    if user is None:
        raise LoginRequiredError()
    return user


def require_reader(request: Request) -> User | None:
    """Read-only pages: a signed-in user, or anyone on this machine when the app was opened read-only."""
    user = current_user(request)
    if user is None and not (state(request).open_readonly and is_local_client(request)):
        raise LoginRequiredError()
    return user


def require_adjudicator(user: Annotated[User, Depends(require_user)]) -> User:
    if user.role != "adjudicator":
        raise HTTPException(403, "adjudicators only")
    return user


def check_csrf(request: Request, csrf_token: Annotated[str, Form()] = "") -> None:
    """Every POST form carries the session's CSRF token; anything else is refused with 403."""
    if not csrf_ok(session(request), csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def get_run(request: Request, run: str) -> Run:
    try:
        return load_run(state(request).runs_dir, run)
    except RunNotFoundError:
        raise HTTPException(404, "no such run") from None


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    st = state(request)
    context.update(
        user=current_user(request),
        csrf_token=session(request)["csrf"],
        chat_enabled=bool(st.chat_models),
    )
    return st.templates.TemplateResponse(request, template, context, status_code=status_code)

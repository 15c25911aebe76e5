"""The FastAPI application: sessions, security headers, error pages and the login form; pages live in
``pages_*.py``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from unredact import __version__
from unredact.web import pages_chat, pages_review, pages_runs
from unredact.web.auth import SessionCodec, load_secret_key, verify_password
from unredact.web.db import Store
from unredact.web.deps import (
    AppState,
    LoginRequiredError,
    check_csrf,
    current_user,
    render,
    set_session,
)
from unredact.web.runs import CLASSES

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _pct(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{100 * value:.{digits}f}%"


def _metric(value: Any) -> Markup:
    """A report metric ``{"rate", "low", "high", "n"}`` as ``42% [35–50%]``; a bare number as a share."""
    if isinstance(value, dict):
        text = escape(_pct(value.get("rate")))
        low, high = value.get("low"), value.get("high")
        if isinstance(low, int | float) and isinstance(high, int | float):
            text += Markup('<small class="ci">[{}–{}]</small>').format(_pct(low).rstrip("%"), _pct(high))
        return text
    return escape(_pct(value))


def _num(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return f"{value:.{digits}f}"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("unredact.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.ChainableUndefined,
    )
    env.filters.update(pct=_pct, metric=_metric, num=_num)
    env.globals.update(CLASSES=CLASSES, version=__version__)
    return Jinja2Templates(env=env)


def _safe_next(target: str | None) -> str:
    # only paths on this site: no scheme, no host, no protocol-relative "//evil"
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def create_app(
    runs_dir: Path,
    *,
    secret_key: str | None = None,
    open_readonly: bool = False,
    chat_models: list[str] | None = None,
) -> FastAPI:
    """The review app over ``runs_dir``; opens (and migrates) ``runs_dir/reviews.db``.

    ``secret_key`` signs session cookies (default: ``$UNREDACT_SECRET_KEY`` or ``runs_dir/.unredact_secret``).
    ``open_readonly`` lets clients on this machine read pages without signing in. ``chat_models`` are
    backend specs (``mock/censor``, ``openai/...``) offered on the live chat page, which is off without them.
    """
    runs_dir = Path(runs_dir)
    store = Store(runs_dir)
    st = AppState(
        runs_dir=runs_dir,
        store=store,
        codec=SessionCodec(load_secret_key(runs_dir, secret_key)),
        templates=_templates(),
        open_readonly=open_readonly,
        chat_models=list(chat_models or []),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="unredact review",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.unredact = st
    app.mount("/static", StaticFiles(packages=[("unredact.web", "static")]), name="static")

    @app.middleware("http")
    async def sessions_and_headers(request: Request, call_next: Any) -> Response:
        data = st.codec.loads(request.cookies.get(st.codec.cookie_name))
        request.state.session = data or st.codec.new()
        request.state.session_changed = data is None
        response: Response = await call_next(request)
        if request.state.session_changed:
            response.set_cookie(
                st.codec.cookie_name,
                st.codec.dumps(request.state.session),
                max_age=st.codec.max_age_s,
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
                path="/",
            )
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(LoginRequiredError)
    async def login_required(request: Request, _exc: LoginRequiredError) -> Response:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return render(request, "error.html", 401, title="Sign in first", detail="Your session has ended.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        response = render(request, "error.html", exc.status_code, title=f"{exc.status_code}", detail=detail)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
        return render(request, "error.html", 400, title="400", detail=f"bad request ({fields})")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        if current_user(request) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        return render(request, "login.html", next=_safe_next(next))

    @app.post("/login", response_class=HTMLResponse, dependencies=[Depends(check_csrf)])
    def login(
        request: Request,
        name: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        ip = request.client.host if request.client else "?"
        if st.limiter.blocked(name, ip):
            return render(
                request,
                "login.html",
                429,
                next=_safe_next(next),
                name=name,
                error="Too many failed attempts: wait a minute and try again.",
            )
        user = st.store.user_by_name(name) if name else None
        if not verify_password(user.password_hash if user else None, password) or user is None:
            st.limiter.failed(name, ip)
            return render(
                request, "login.html", 401, next=_safe_next(next), name=name, error="Wrong user name or password."
            )
        st.limiter.reset(name, ip)
        set_session(request, st.codec.new(user.id))  # a new CSRF token with every new identity
        request.state.user = user
        return RedirectResponse(_safe_next(next), status_code=303)

    @app.post("/logout", dependencies=[Depends(check_csrf)])
    def logout(request: Request) -> Response:
        set_session(request, st.codec.new())
        return RedirectResponse("/login", status_code=303)

    app.include_router(pages_runs.router)
    app.include_router(pages_review.router)
    app.include_router(pages_chat.router)

    return app

"""Live chat with the configured backends (off unless ``create_app(chat_models=[...])``)."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from unredact.errors import UnredactError
from unredact.web.db import User
from unredact.web.deps import check_csrf, render, require_user, state

router = APIRouter()
Signed = Annotated[User, Depends(require_user)]
MAX_PROMPT = 8000
_load_lock = threading.Lock()


def _backend(request: Request, spec: str) -> Any:
    # imported here: the backends (and their optional dependencies) load only when chat is used
    from unredact.backends.registry import load_backend

    st = state(request)
    with _load_lock:
        if spec not in st.chat_backends:
            st.chat_backends[spec] = load_backend(spec)
        return st.chat_backends[spec]


@router.get("/chat", response_class=HTMLResponse)
def chat_page(request: Request, _user: Signed) -> Response:
    return render(request, "chat.html", models=state(request).chat_models, answer=None, form={})


@router.post("/chat", response_class=HTMLResponse, dependencies=[Depends(check_csrf)])
def chat_submit(
    request: Request,
    _user: Signed,
    model: Annotated[str, Form()],
    prompt: Annotated[str, Form()],
    system_prompt: Annotated[str, Form()] = "",
) -> Response:
    from unredact.backends.base import GenerationRequest

    models = state(request).chat_models
    if model not in models:
        raise HTTPException(400, "that model is not offered here")
    if not prompt.strip() or len(prompt) > MAX_PROMPT:
        raise HTTPException(400, f"the prompt must have 1 to {MAX_PROMPT} characters")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt.strip() else []) + [
        {"role": "user", "content": prompt}
    ]
    form = {"model": model, "prompt": prompt, "system_prompt": system_prompt}
    try:
        backend = _backend(request, model)
        result = next(iter(backend.generate([GenerationRequest(key="chat", messages=tuple(messages))])))
    except UnredactError as exc:
        return render(request, "chat.html", 502, models=models, answer=None, form=form, error=str(exc))
    return render(request, "chat.html", models=models, answer=result, form=form)

"""The expert review web app: browse runs, compare answers, label, adjudicate, measure agreement, export."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["add_user", "create_app", "list_users"]

if TYPE_CHECKING:
    from unredact.web.app import create_app
    from unredact.web.auth import add_user, list_users


def __getattr__(name: str) -> Any:
    # fastapi and friends are an optional extra: import them only when asked for
    if name == "create_app":
        from unredact.web.app import create_app

        return create_app
    if name in ("add_user", "list_users"):
        from unredact.web import auth

        return getattr(auth, name)
    raise AttributeError(name)

"""Accounts and sessions: argon2 password hashes, signed session cookies, CSRF tokens, login rate limit."""

from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.exc import IntegrityError

from unredact.errors import UnredactError
from unredact.web.db import Store, User

Role = Literal["reviewer", "adjudicator"]
ROLES: tuple[str, ...] = ("reviewer", "adjudicator")
USER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LEN = 8
SECRET_FILE = ".unredact_secret"
SECRET_ENV = "UNREDACT_SECRET_KEY"

_hasher = PasswordHasher()
_dummy_hashes: dict[int, str] = {}


def _dummy_hash() -> str:
    # verified against when the user does not exist, so that a login takes as long either way
    if id(_hasher) not in _dummy_hashes:
        _dummy_hashes[id(_hasher)] = _hasher.hash(secrets.token_hex(16))
    return _dummy_hashes[id(_hasher)]


class UserError(UnredactError):
    """A user that cannot be added (bad name, role or password, or a duplicate)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def add_user(runs_dir: Path, name: str, role: Role | str, password: str) -> None:
    """Create a reviewer or adjudicator account in ``RUNS_DIR/reviews.db``."""
    if USER_NAME_RE.fullmatch(name) is None:
        raise UserError(f"invalid user name {name!r} (letters, digits, . _ @ -; at most 64 characters)")
    if role not in ROLES:
        raise UserError(f"invalid role {role!r} (one of: {', '.join(ROLES)})")
    if len(password) < MIN_PASSWORD_LEN:
        raise UserError(f"the password must have at least {MIN_PASSWORD_LEN} characters")
    store = Store(runs_dir)
    try:
        store.add_user(name, role, hash_password(password))
    except IntegrityError as exc:
        raise UserError(f"user {name!r} already exists") from exc
    finally:
        store.close()


def list_users(runs_dir: Path) -> list[User]:
    store = Store(runs_dir)
    try:
        return store.users()
    finally:
        store.close()


def load_secret_key(runs_dir: Path, explicit: str | None = None) -> str:
    """The cookie-signing key: ``explicit``, else ``$UNREDACT_SECRET_KEY``, else ``RUNS_DIR/.unredact_secret``
    (created once with mode 0600)."""
    if explicit:
        return explicit
    if env := os.environ.get(SECRET_ENV):
        return env
    path = runs_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise UnredactError(f"{path} is empty: delete it to generate a new key") from None
        return key
    key = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key


class SessionCodec:
    """Session data in a signed (not encrypted) cookie: ``{"uid": user id or None, "csrf": token}``."""

    cookie_name = "unredact_session"
    max_age_s = 12 * 3600

    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt="unredact.session")

    def dumps(self, session: dict[str, Any]) -> str:
        return self._serializer.dumps(session)

    def loads(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:  # includes expired signatures
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        return data

    @staticmethod
    def new(uid: int | None = None) -> dict[str, Any]:
        return {"uid": uid, "csrf": secrets.token_urlsafe(32)}


def csrf_ok(session: dict[str, Any], token: str) -> bool:
    expected = session.get("csrf")
    return bool(token) and isinstance(expected, str) and hmac.compare_digest(expected, token)


class LoginLimiter:
    """At most ``max_failures`` failed logins per (user name, client address) in ``window_s`` seconds."""

    def __init__(
        self, max_failures: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def blocked(self, name: str, ip: str) -> bool:
        with self._lock:
            return len(self._recent((name, ip), self.clock())) >= self.max_failures

    def failed(self, name: str, ip: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent((name, ip), now).append(now)
            if len(self._failures) > 10_000:  # forget idle keys so memory stays bounded
                for key in [k for k, v in self._failures.items() if not v or v[-1] <= now - self.window_s]:
                    del self._failures[key]

    def reset(self, name: str, ip: str) -> None:
        with self._lock:
            self._failures.pop((name, ip), None)

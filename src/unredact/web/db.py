"""The review database (SQLite ``RUNS_DIR/reviews.db``): users, labels, skips, adjudications.

The schema is created by numbered migrations (plain SQL, recorded in ``schema_version``) applied at
start-up; the ORM classes below mirror the latest schema. Every write is its own short transaction in
WAL mode with ``synchronous=FULL``, so a label is on disk once the request that saved it returns.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Engine,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from unredact.errors import UnredactError

DB_NAME = "reviews.db"

#: (version, description, statements). Append only: never edit a migration that has shipped.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "users, labels, skips, adjudications",
        [
            """CREATE TABLE users (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL CHECK (role IN ('reviewer', 'adjudicator')),
                password_hash TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            """CREATE TABLE labels (
                id INTEGER PRIMARY KEY,
                user_id INTEGER NOT NULL REFERENCES users(id),
                run TEXT NOT NULL,
                key TEXT NOT NULL,
                label TEXT NOT NULL,
                facts_covered TEXT NOT NULL DEFAULT '[]',
                note TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                CONSTRAINT uq_label_user_run_key UNIQUE (user_id, run, key)
            )""",
            "CREATE INDEX ix_labels_run_key ON labels (run, key)",
            """CREATE TABLE skips (
                id INTEGER PRIMARY KEY,
                user_id INTEGER NOT NULL REFERENCES users(id),
                run TEXT NOT NULL,
                key TEXT NOT NULL,
                created_at TEXT NOT NULL,
                CONSTRAINT uq_skip_user_run_key UNIQUE (user_id, run, key)
            )""",
            """CREATE TABLE adjudications (
                id INTEGER PRIMARY KEY,
                run TEXT NOT NULL,
                key TEXT NOT NULL,
                label TEXT NOT NULL,
                facts_covered TEXT NOT NULL DEFAULT '[]',
                note TEXT NOT NULL DEFAULT '',
                adjudicator_id INTEGER NOT NULL REFERENCES users(id),
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                CONSTRAINT uq_adjudication_run_key UNIQUE (run, key)
            )""",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    role: Mapped[str] = mapped_column(String)
    password_hash: Mapped[str] = mapped_column(String)
    created_at: Mapped[str] = mapped_column(String, default=now)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("user_id", "run", "key", name="uq_label_user_run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    run: Mapped[str] = mapped_column(String)
    key: Mapped[str] = mapped_column(String)
    label: Mapped[str] = mapped_column(String)
    facts_covered: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String, default=now)
    updated_at: Mapped[str] = mapped_column(String, default=now)


class Skip(Base):
    __tablename__ = "skips"
    __table_args__ = (UniqueConstraint("user_id", "run", "key", name="uq_skip_user_run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    run: Mapped[str] = mapped_column(String)
    key: Mapped[str] = mapped_column(String)
    created_at: Mapped[str] = mapped_column(String, default=now)


class Adjudication(Base):
    __tablename__ = "adjudications"
    __table_args__ = (UniqueConstraint("run", "key", name="uq_adjudication_run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run: Mapped[str] = mapped_column(String)
    key: Mapped[str] = mapped_column(String)
    label: Mapped[str] = mapped_column(String)
    facts_covered: Mapped[list[str]] = mapped_column(JSON, default=list)
    note: Mapped[str] = mapped_column(Text, default="")
    adjudicator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[str] = mapped_column(String, default=now)
    updated_at: Mapped[str] = mapped_column(String, default=now)


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 10})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # take over transaction control from the sqlite3 module so DDL is transactional too
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def migrate(engine: Engine) -> int:
    """Apply the migrations not yet recorded, each in its own transaction; return the schema version."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = conn.execute(text("SELECT COALESCE(MAX(version), 0) FROM schema_version")).scalar_one()
    if current > SCHEMA_VERSION:
        raise UnredactError(
            f"{DB_NAME} has schema version {current}, newer than this unredact ({SCHEMA_VERSION}); upgrade"
        )
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
            conn.execute(
                text("INSERT INTO schema_version (version, description, applied_at) VALUES (:v, :d, :t)"),
                {"v": version, "d": description, "t": now()},
            )
        current = version
    return current


@dataclass(frozen=True)
class LabelRecord:
    """A human label as the review logic sees it (plain values, no database session)."""

    id: int
    user: str
    run: str
    key: str
    label: str
    facts_covered: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class AdjudicationRecord:
    run: str
    key: str
    label: str
    facts_covered: tuple[str, ...]
    note: str
    adjudicator: str


class FullItemError(Exception):
    """The item got its two labels from other reviewers meanwhile."""


class Store:
    """All database access of the app; each method is one short transaction."""

    def __init__(self, runs_dir: Path) -> None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = runs_dir / DB_NAME
        if not self.path.exists():  # it holds password hashes: owner only (SQLite's -wal/-shm files follow)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.engine = _sqlite_engine(self.path)
        try:
            self.version = migrate(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self._session()

    def close(self) -> None:
        self.engine.dispose()

    # users
    def user_by_name(self, name: str) -> User | None:
        with self.session() as s:
            return s.scalar(select(User).where(User.name == name))

    def user_by_id(self, user_id: int) -> User | None:
        with self.session() as s:
            return s.get(User, user_id)

    def add_user(self, name: str, role: str, password_hash: str) -> User:
        with self.session() as s, s.begin():
            user = User(name=name, role=role, password_hash=password_hash, created_at=now())
            s.add(user)
        return user

    def users(self) -> list[User]:
        with self.session() as s:
            return list(s.scalars(select(User).order_by(User.name)))

    # labels
    def save_label(self, user_id: int, run: str, key: str, label: str, facts: list[str], note: str) -> None:
        """Insert or update this user's label; refuse a third label on an item (FullItemError)."""
        stamp = now()
        stmt = sqlite_insert(Label).values(
            user_id=user_id,
            run=run,
            key=key,
            label=label,
            facts_covered=facts,
            note=note,
            created_at=stamp,
            updated_at=stamp,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id", "run", "key"],
            set_={"label": label, "facts_covered": facts, "note": note, "updated_at": stamp},
        )
        with self.session() as s, s.begin():
            # the write comes first: it takes SQLite's write lock, so the count below cannot go stale
            s.execute(stmt)
            n = s.scalar(select(func.count()).select_from(Label).where(Label.run == run, Label.key == key))
            if (n or 0) > 2:
                raise FullItemError(key)  # rolls the insert back

    def skip(self, user_id: int, run: str, key: str) -> None:
        stmt = sqlite_insert(Skip).values(user_id=user_id, run=run, key=key, created_at=now())
        with self.session() as s, s.begin():
            s.execute(stmt.on_conflict_do_nothing(index_elements=["user_id", "run", "key"]))

    def labels(self, run: str) -> list[LabelRecord]:
        with self.session() as s:
            rows = s.execute(
                select(Label, User.name).join(User, User.id == Label.user_id).where(Label.run == run).order_by(Label.id)
            )
            return [
                LabelRecord(lb.id, name, lb.run, lb.key, lb.label, tuple(lb.facts_covered or ()), lb.note or "")
                for lb, name in rows
            ]

    def label_counts(self) -> dict[str, tuple[int, int]]:
        """Per run: (labels, items with two or more labels)."""
        with self.session() as s:
            per_item = select(Label.run, Label.key, func.count().label("n")).group_by(Label.run, Label.key).subquery()
            rows = s.execute(
                select(per_item.c.run, func.sum(per_item.c.n), func.sum((per_item.c.n >= 2).cast(Integer))).group_by(
                    per_item.c.run
                )
            )
            return {run: (int(total or 0), int(double or 0)) for run, total, double in rows}

    def skipped(self, user_id: int, run: str) -> dict[str, int]:
        """Keys this user skipped in ``run``, with the order of skipping."""
        with self.session() as s:
            rows = s.execute(select(Skip.key, Skip.id).where(Skip.user_id == user_id, Skip.run == run))
            return {key: order for key, order in rows}

    # adjudications
    def adjudicate(self, user_id: int, run: str, key: str, label: str, facts: list[str], note: str) -> None:
        stamp = now()
        stmt = sqlite_insert(Adjudication).values(
            run=run,
            key=key,
            label=label,
            facts_covered=facts,
            note=note,
            adjudicator_id=user_id,
            created_at=stamp,
            updated_at=stamp,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["run", "key"],
            set_={"label": label, "facts_covered": facts, "note": note, "adjudicator_id": user_id, "updated_at": stamp},
        )
        with self.session() as s, s.begin():
            s.execute(stmt)

    def adjudications(self, run: str) -> dict[str, AdjudicationRecord]:
        with self.session() as s:
            rows = s.execute(
                select(Adjudication, User.name)
                .join(User, User.id == Adjudication.adjudicator_id)
                .where(Adjudication.run == run)
            )
            return {
                a.key: AdjudicationRecord(a.run, a.key, a.label, tuple(a.facts_covered or ()), a.note or "", name)
                for a, name in rows
            }

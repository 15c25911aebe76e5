"""``unredact serve`` and ``unredact users ...``: the review app's commands (web dependencies load lazily)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from unredact.errors import UnredactError

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="directory holding the run directories and reviews.db")]


class RoleChoice(StrEnum):
    reviewer = "reviewer"
    adjudicator = "adjudicator"


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(getattr(exc, "exit_code", 2))


def serve(
    runs_dir: Annotated[Path, typer.Argument(help="directory holding the run directories and reviews.db")] = Path(
        "runs"
    ),
    host: Annotated[str, typer.Option(help="address to listen on; keep 127.0.0.1 unless behind a proxy")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    open_readonly: Annotated[
        bool,
        typer.Option(help="let clients on this machine read runs, comparisons and agreement unsigned"),
    ] = False,
    chat_model: Annotated[
        list[str] | None,
        typer.Option(help="backend offered on the live chat page (repeatable), e.g. mock/censor"),
    ] = None,
) -> None:
    """Serve the expert review web app over RUNS_DIR (runs, compare, label, adjudicate, agreement, export)."""
    try:
        import uvicorn

        from unredact.web.app import create_app
    except ImportError as exc:
        missing = UnredactError(f"the web app needs a missing package ({exc.name}): install unredact[web]")
        raise _fail(missing) from exc
    if not runs_dir.is_dir():
        raise _fail(UnredactError(f"runs directory {runs_dir} does not exist"))
    try:
        app = create_app(runs_dir, open_readonly=open_readonly, chat_models=list(chat_model or []))
    except UnredactError as exc:
        raise _fail(exc) from exc
    typer.echo(f"unredact review: http://{host}:{port}/ over {runs_dir.resolve()}")
    uvicorn.run(app, host=host, port=port, log_level="info")


users_app = typer.Typer(help="Manage the accounts of the review web app.", no_args_is_help=True)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="user name (letters, digits, . _ @ -)")],
    role: Annotated[
        RoleChoice, typer.Option(help="reviewers label; adjudicators also settle disagreements")
    ] = RoleChoice.reviewer,
    password_stdin: Annotated[bool, typer.Option(help="read the password from the first line of stdin")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Add a reviewer or adjudicator (the password is asked twice unless --password-stdin)."""
    from unredact.web.auth import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        add_user(runs_dir, name, role.value, password)
    except UnredactError as exc:
        raise _fail(exc) from exc
    typer.echo(f"added {role.value} {name}")


@users_app.command("list")
def users_list(runs_dir: RunsDir = Path("runs")) -> None:
    """List the accounts (name, role, creation time)."""
    from unredact.web.auth import list_users

    users = list_users(runs_dir)
    if not users:
        typer.echo("no users yet: unredact users add NAME --role reviewer")
    for user in users:
        typer.echo(f"{user.name}\t{user.role}\t{user.created_at}")

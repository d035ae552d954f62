"""``librarian user create|list|delete|password``: accounts, run on the librarian's host."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from librarian_dagster.cli.common import admin_settings, catalogue, console, fail, one_line_errors
from librarian_dagster.services import accounts
from librarian_dagster.states import UserLevel

app = typer.Typer(help="Manage user accounts (and peers' callback accounts).", no_args_is_help=True)


def _read_password(given: str | None) -> str:
    if given is not None:
        return given
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@app.command("create")
@one_line_errors
def create(
    name: str,
    level: Annotated[UserLevel, typer.Option(help="Permission level.")] = UserLevel.READ_ONLY,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="LIBRARIAN_NEW_PASSWORD", help="Password (default: prompt).", show_default=False
        ),
    ] = None,
) -> None:
    """Create an account."""
    current = admin_settings()
    secret = _read_password(password)
    with catalogue(current).session() as session:
        accounts.create_user(
            session, accounts.password_hasher(current.security), name, secret, level
        )
    console.print(f"created user {name} ({level.value})")


@app.command("list")
@one_line_errors
def list_() -> None:
    """List accounts and their levels."""
    current = admin_settings()
    table = Table("name", "level", "created", "password changed")
    with catalogue(current).session() as session:
        for user in accounts.list_users(session):
            table.add_row(
                user.name,
                user.level.value,
                f"{user.created_at:%Y-%m-%d %H:%M}",
                f"{user.password_changed_at:%Y-%m-%d %H:%M}",
            )
    console.print(table)


@app.command("delete")
@one_line_errors
def delete(name: str, yes: Annotated[bool, typer.Option("--yes", "-y")] = False) -> None:
    """Delete an account."""
    current = admin_settings()
    database = catalogue(current)
    with database.session() as session:
        accounts.get_user(session, name)  # no such user: say so before asking anything
    if not yes and not typer.confirm(f"delete user {name}?"):
        raise fail("not deleted", code=1)
    with database.session() as session:
        accounts.delete_user(session, name)
    console.print(f"deleted user {name}")


@app.command("password")
@one_line_errors
def password(
    name: str,
    password: Annotated[
        str | None,
        typer.Option(
            envvar="LIBRARIAN_NEW_PASSWORD",
            help="New password (default: prompt).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Set an account's password."""
    current = admin_settings()
    secret = _read_password(password)
    with catalogue(current).session() as session:
        accounts.set_password(session, accounts.password_hasher(current.security), name, secret)
    console.print(f"password of {name} changed")

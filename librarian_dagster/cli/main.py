"""The ``librarian`` command (SPEC §7). Sub-commands live in sibling modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from librarian_dagster.cli import (
    client_cmds,
    corrupt_cmd,
    events_cmd,
    integrity_cmd,
    peers_cmd,
    serve_cmd,
    sneaker_cmd,
    stores_cmd,
    transfers_cmd,
    users_cmd,
)
from librarian_dagster.cli.common import console, fail, one_line_errors, set_config, settings
from librarian_dagster.cli.serve_lock import describe, holder
from librarian_dagster.dagster_instance import prepare_dagster_home
from librarian_dagster.services.bootstrap import (
    ADMIN_PASSWORD_ENV,
    ADMIN_USER,
    check_catalogue,
    initialise,
    shown_url,
)
from librarian_dagster.services.errors import CatalogueNotReady

app = typer.Typer(
    name="librarian",
    help="Research-data librarian: ingest, catalogue and move immutable books.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(users_cmd.app, name="user")
app.add_typer(stores_cmd.app, name="store")
app.add_typer(corrupt_cmd.app, name="corrupt")
app.add_typer(events_cmd.app, name="events")
app.add_typer(peers_cmd.app, name="peer")
app.add_typer(transfers_cmd.app, name="transfer")
app.add_typer(sneaker_cmd.app, name="sneaker")
app.command("serve")(serve_cmd.serve)
app.command("validate")(integrity_cmd.validate)
app.command("rebuild")(integrity_cmd.rebuild)
app.command("scan")(integrity_cmd.scan)
client_cmds.register(app)


@app.callback()
def main(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (default: $LIBRARIAN_CONFIG or ./librarian.toml)."
        ),
    ] = None,
) -> None:
    set_config(config)


@app.command()
@one_line_errors
def init() -> None:
    """Create or migrate the catalogue, stores and Dagster home; create the first admin."""
    current = settings()
    running = holder(current.data_dir)
    if running is not None:
        try:
            check_catalogue(current)
        except CatalogueNotReady:
            raise fail(
                f"librarian serve ({describe(running)}) is running for {current.data_dir}: "
                "stop it before init creates or migrates its catalogue"
            ) from None
    result = initialise(current)
    prepare_dagster_home(current)
    shown = shown_url(current.catalogue_url)
    console.print(f'librarian [bold]"{current.name}"[/] ready: catalogue {shown}')
    for store in current.stores:
        console.print(f"  store {store.name} ({store.kind}) at {store.root}")
    for note in result.store_notes:
        console.print(f"  {escape(note)}", highlight=False)
    if result.secret_key_created:
        console.print(f"  secret key written to {current.secret_key_file} (mode 0600)")
    if result.generated_admin_password:
        console.print(
            f"  created user [bold]{ADMIN_USER}[/] with password "
            f"[bold]{result.generated_admin_password}[/] (shown once; set "
            f"{ADMIN_PASSWORD_ENV} to choose it)",
            highlight=False,
        )
    elif result.admin_created:
        console.print(
            f"  created user [bold]{ADMIN_USER}[/] with the password from {ADMIN_PASSWORD_ENV}"
        )


if __name__ == "__main__":
    app()

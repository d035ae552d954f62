"""``librarian serve``: prepare, then supervise API + Dagster webserver + daemon."""

from __future__ import annotations

import os

import typer

from librarian_dagster.cli.common import console, err_console, one_line_errors, settings
from librarian_dagster.cli.supervisor import child_commands, supervise
from librarian_dagster.dagster_instance import (
    dagster_env,
    initialise_instance,
    prepare_dagster_home,
)
from librarian_dagster.services.bootstrap import prepare
from librarian_dagster.settings import CONFIG_ENV


@one_line_errors
def serve() -> None:
    """Run the API, the Dagster webserver and the Dagster daemon; Ctrl-C stops all three."""
    current = settings()
    prepare(current)
    prepare_dagster_home(current)
    initialise_instance(current)
    env = dict(os.environ)
    env.update(dagster_env(current))
    if current.config_file is not None:
        env[CONFIG_ENV] = str(current.config_file)
    children = child_commands(
        api_host=current.api.host,
        api_port=current.api.port,
        webserver_host=current.dagster.webserver_host,
        webserver_port=current.dagster.webserver_port,
        workspace=current.dagster_home / "workspace.yaml",
        env=env,
    )
    console.print(f"librarian [bold]{current.name}[/]")
    console.print(f"  API        {current.api.public_url}/api/v2/ping")
    console.print(
        f"  Dagster UI http://{current.dagster.webserver_host}:{current.dagster.webserver_port}"
    )
    console.print(f"  DAGSTER_HOME={env['DAGSTER_HOME']}")
    console.print("  Ctrl-C stops all three")
    code = supervise(children, lambda line: err_console.print(f"librarian serve: {line}"))
    raise typer.Exit(code)

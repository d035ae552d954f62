"""``librarian serve``: prepare, then supervise API + Dagster webserver + daemon."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.markup import escape

from librarian_dagster.cli.common import console, err_console, fail, one_line_errors, settings
from librarian_dagster.cli.serve_lock import TOKEN_ENV, AlreadyServing, ServeLock, stop_orphans
from librarian_dagster.cli.supervisor import child_commands, child_environment, supervise
from librarian_dagster.dagster_instance import (
    dagster_env,
    initialise_instance,
    prepare_dagster_home,
)
from librarian_dagster.services.bootstrap import check_catalogue, ready
from librarian_dagster.settings import CONFIG_ENV, SECRET_KEY_ENV, LibrarianSettings


@one_line_errors
def serve(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also print the INFO logs of the API, webserver and daemon."
        ),
    ] = False,
) -> None:
    """Run the API, the Dagster webserver and the Dagster daemon; Ctrl-C stops all three.

    Idle it prints nothing but warnings and errors; ``--verbose`` shows the rest.
    """
    current = settings()
    check_catalogue(current)  # before the lock: a wrong directory leaves nothing behind
    lock = ServeLock(
        current.data_dir,
        announce={
            "api_url": current.api.public_url,
            "ui_url": f"http://{current.dagster.webserver_host}:{current.dagster.webserver_port}",
            "config_file": str(current.config_file or ""),
        },
    )
    try:
        previous = lock.acquire()
    except AlreadyServing as error:
        raise fail(str(error)) from None
    try:
        stopped = stop_orphans(previous)
        if stopped:
            err_console.print(
                f"librarian serve: stopped {stopped} processes left by a previous serve"
            )
        code = _serve(current, lock, verbose=verbose)
    finally:
        lock.release()
    raise typer.Exit(code)


def _secret_names(current: LibrarianSettings) -> list[str]:
    """Variables the children get besides the allow-list: secrets, and what runs launched
    elsewhere take from the daemon's environment (``[dagster] run_launcher_env``)."""
    names = [SECRET_KEY_ENV, *current.dagster.run_launcher_env]
    if current.notify is not None:
        names.append(current.notify.slack_token_env)
    if current.globus is not None:
        names.append(current.globus.client_secret_env)
    return names


def _serve(current: LibrarianSettings, lock: ServeLock, *, verbose: bool) -> int:
    for note in ready(current):
        err_console.print(f"librarian serve: {escape(note)}", highlight=False, soft_wrap=True)
    prepare_dagster_home(current)
    initialise_instance(current)
    env = child_environment(os.environ, _secret_names(current))
    env.update(dagster_env(current))
    env[TOKEN_ENV] = lock.token  # what the next serve looks for if this one is killed
    if current.config_file is not None:
        env[CONFIG_ENV] = str(current.config_file)
    children = child_commands(
        api_host=current.api.host,
        api_port=current.api.port,
        webserver_host=current.dagster.webserver_host,
        webserver_port=current.dagster.webserver_port,
        workspace=current.dagster_home / "workspace.yaml",
        env=env,
        verbose=verbose,
    )
    console.print(f'librarian [bold]"{current.name}"[/] serving')
    console.print(f"  API        {current.api.public_url}/api/v2/ping")
    console.print(
        f"  Dagster UI http://{current.dagster.webserver_host}:{current.dagster.webserver_port}"
    )
    console.print(f"  DAGSTER_HOME={env['DAGSTER_HOME']}")
    console.print("  Ctrl-C stops all three")
    return supervise(
        children,
        lambda line: err_console.print(f"librarian serve: {line}"),
        on_started=lambda started: lock.record([child.name for child in started]),
    )

"""The Dagster instance a librarian runs on: ``DAGSTER_HOME``, ``dagster.yaml``, workspace.

``librarian serve`` and ``librarian init`` write the files into ``<data_dir>/dagster`` from
settings, so the instance always matches the configuration. The repository's top-level
``dagster.yaml`` and ``workspace.yaml`` are what these functions produce for the embedded
defaults (a test keeps them equal). Beside ``dagster.yaml`` goes ``api-instance.yaml``, the
same instance as the API process opens it: without compute-log capture (see
``api_instance_config``). The PostgreSQL URL of Dagster's storage is never written to disk:
the files refer to an environment variable that ``serve`` sets for its children.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from librarian_dagster.jobs.names import (
    BOOKS_PARTITIONS,
    CALLBACKS_KIND,
    CLONE_KIND,
    DRIVE_INGEST_KIND,
    FILL_KIND,
    INGEST_KIND,
    INTEGRITY_KIND,
    KIND_TAG,
    LOCATION_NAME,
    RECEIVE_KIND,
)
from librarian_dagster.settings import CONFIG_ENV, LibrarianSettings

DAGSTER_PG_URL_ENV = "LIBRARIAN_DAGSTER_PG_URL"
API_INSTANCE_FILE = "api-instance.yaml"


def instance_config(settings: LibrarianSettings) -> dict[str, Any]:
    """The content of ``dagster.yaml`` for these settings."""
    config: dict[str, Any] = {
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},  # no "join the Dagster community" dialog (shouldShowNux)
        "run_monitoring": {"enabled": True},
        # The queued coordinator's own block (not top-level `concurrency`) is the one that
        # takes a dequeue interval: 1 s instead of 5 s is most of an upload's latency.
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": settings.dagster.max_concurrent_runs,
                "dequeue_interval_seconds": 1,
                # A burst of uploads (or of clones arriving) must not take every slot:
                # transfers, callbacks and checks go on.
                "tag_concurrency_limits": [
                    {"key": KIND_TAG, "value": INGEST_KIND, "limit": 2},
                    {"key": KIND_TAG, "value": RECEIVE_KIND, "limit": 2},
                    {"key": KIND_TAG, "value": CLONE_KIND, "limit": 2},
                    {"key": KIND_TAG, "value": CALLBACKS_KIND, "limit": 1},
                    # One drive written at a time: fills are bound by the disks, not the CPU.
                    {"key": KIND_TAG, "value": FILL_KIND, "limit": 1},
                    {"key": KIND_TAG, "value": DRIVE_INGEST_KIND, "limit": 1},
                    # One integrity reader: large sequential reads, ingest not starved.
                    {"key": KIND_TAG, "value": INTEGRITY_KIND, "limit": 1},
                ],
            },
        },
    }
    if settings.dagster.postgres_url:
        config["storage"] = {"postgres": {"postgres_url": {"env": DAGSTER_PG_URL_ENV}}}
    launcher = run_launcher_config(settings)
    if launcher is not None:
        config["run_launcher"] = launcher
    return config


# The ConfigMap that holds dagster.yaml for Kubernetes run Jobs (docs/deployment.md).
K8S_INSTANCE_CONFIG_MAP = "librarian-dagster-instance"


def run_launcher_config(settings: LibrarianSettings) -> dict[str, Any] | None:
    """The ``run_launcher`` block for ``[dagster] run_launcher`` (None: Dagster's default).

    Runs started elsewhere read the same config file, Dagster storage (PostgreSQL: SQLite
    under ``DAGSTER_HOME`` is not reachable from there) and stores at the same paths; they
    take ``LIBRARIAN_CONFIG``, the storage URL and ``run_launcher_env`` from the daemon's
    environment. Docker containers bind the config file, ``data_dir`` and every store root
    and inbox at the same paths; a Kubernetes Job mounts what ``run_launcher_config`` says.
    """
    dagster = settings.dagster
    if dagster.run_launcher == "default":
        return None
    # (Settings refuse a launcher without postgres_url: runs elsewhere need shared storage.)
    env = [CONFIG_ENV] if settings.config_file is not None else []
    env.append(DAGSTER_PG_URL_ENV)
    env += [name for name in dagster.run_launcher_env if name not in env]
    if dagster.run_launcher == "docker":
        generated: dict[str, Any] = {"image": dagster.run_launcher_image, "env_vars": env}
        if dagster.run_launcher_network:
            generated["network"] = dagster.run_launcher_network
        generated["container_kwargs"] = {"volumes": _same_path_binds(settings)}
        module, cls = "dagster_docker", "DockerRunLauncher"
    else:
        generated = {
            "job_image": dagster.run_launcher_image,
            "job_namespace": dagster.run_launcher_namespace,
            "instance_config_map": K8S_INSTANCE_CONFIG_MAP,
            # The pods' own account (they call no Kubernetes API); the launcher requires one.
            "service_account_name": "default",
            "env_vars": env,
            "load_incluster_config": not dagster.run_launcher_kubeconfig,
        }
        if dagster.run_launcher_kubeconfig:
            generated["kubeconfig_file"] = dagster.run_launcher_kubeconfig
        module, cls = "dagster_k8s", "K8sRunLauncher"
    for key, value in dagster.run_launcher_config.items():
        current = generated.get(key)
        both_tables = isinstance(current, dict) and isinstance(value, dict)
        generated[key] = {**current, **value} if both_tables else value
    return {"module": module, "class": cls, "config": generated}


def _same_path_binds(settings: LibrarianSettings) -> list[str]:
    """Docker bind mounts (``host:container[:ro]``) of what a run reads, at the same paths."""
    paths = [settings.data_dir, *(store.root for store in settings.stores)]
    paths += [store.inbox for store in settings.stores if store.inbox is not None]
    binds: list[str] = []
    kept: list[Path] = []
    for path in sorted({Path(os.path.abspath(path)) for path in paths}):
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
            binds.append(f"{path}:{path}")
    config_file = settings.config_file
    if config_file is not None and not any(config_file.is_relative_to(p) for p in kept):
        binds.append(f"{config_file}:{config_file}:ro")
    return binds


def api_instance_config(settings: LibrarianSettings) -> dict[str, Any]:
    """The instance as the API process opens it, to execute ingest runs in-process.

    Capturing a run's stdout/stderr means dup2-ing the process's fds 1 and 2 to a ``tail``
    process: in the API that would divert every thread's output while a run goes on. Its
    runs log through Dagster's event log instead, which the UI shows. (``dagster.core`` is
    the spelling Dagster's instance config accepts for its own modules.)
    """
    return {
        **instance_config(settings),
        "compute_logs": {
            "module": "dagster.core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        },
    }


def workspace_config() -> dict[str, Any]:
    return {
        "load_from": [
            {
                "python_module": {
                    "module_name": "librarian_dagster.definitions",
                    "location_name": LOCATION_NAME,
                }
            }
        ]
    }


def _write_if_changed(path: Path, content: str) -> None:
    if not path.exists() or path.read_text() != content:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        tmp.replace(path)


def prepare_dagster_home(settings: LibrarianSettings) -> Path:
    """Create ``DAGSTER_HOME`` with its ``dagster.yaml`` and ``workspace.yaml``; return it."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    _write_if_changed(
        home / "dagster.yaml", yaml.safe_dump(instance_config(settings), sort_keys=False)
    )
    _write_if_changed(
        home / API_INSTANCE_FILE, yaml.safe_dump(api_instance_config(settings), sort_keys=False)
    )
    _write_if_changed(home / "workspace.yaml", yaml.safe_dump(workspace_config(), sort_keys=False))
    return home


def initialise_instance(settings: LibrarianSettings) -> None:
    """Create Dagster's storage once, before the webserver and the daemon start.

    Left to them, both create the tables of a fresh instance at the same moment and one of
    them dies ("table ... already exists"). Opening the instance here and touching each
    storage creates everything first, for SQLite and dagster-postgres alike.
    """
    import dagster as dg

    previous = {key: os.environ.get(key) for key in dagster_env(settings)}
    os.environ.update(dagster_env(settings))
    try:
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            instance.get_runs(limit=1)
            instance.get_dynamic_partitions(BOOKS_PARTITIONS)
            instance.all_instigator_state()
            instance.get_asset_keys(limit=1)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def dagster_env(settings: LibrarianSettings) -> dict[str, str]:
    """Environment additions for Dagster processes of this librarian."""
    env = {"DAGSTER_HOME": str(settings.dagster_home.resolve())}
    if settings.dagster.postgres_url:
        env[DAGSTER_PG_URL_ENV] = settings.dagster.postgres_url
    return env


def reload_code_location(settings: LibrarianSettings, timeout: float = 10.0) -> str | None:
    """Ask the running Dagster webserver to reload the code location (peer assets change
    when peers do); None if it did, else why not (it may not be running: that is fine)."""
    import httpx

    url = f"http://{settings.dagster.webserver_host}:{settings.dagster.webserver_port}/graphql"
    query = (
        "mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) "
        "{ __typename } }"
    )
    try:
        response = httpx.post(
            url, json={"query": query, "variables": {"name": LOCATION_NAME}}, timeout=timeout
        )
        response.raise_for_status()
        kind = response.json()["data"]["reloadRepositoryLocation"]["__typename"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        return f"{type(error).__name__}: {error}"[:200]
    return None if kind == "WorkspaceLocationEntry" else kind

"""The deployment guide, the files in ``deploy/`` and the code agree (docs/deployment.md).

The guide shows the production ``librarian.toml`` and the systemd units in full; these tests
keep each copy equal to its file in ``deploy/``, check that the config loads as a production
config (no connection needed), that the unit runs ``librarian --config ... serve`` as the
service user from the data dir, and that each ``[dagster] run_launcher`` choice produces a
``dagster.yaml`` that loads as a real ``DagsterInstance`` with that launcher (no container
or cluster is touched).
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from librarian_dagster.cli.common import set_config
from librarian_dagster.cli.main import app
from librarian_dagster.cli.supervisor import GRACE_SECONDS
from librarian_dagster.dagster_instance import (
    API_INSTANCE_FILE,
    DAGSTER_PG_URL_ENV,
    K8S_INSTANCE_CONFIG_MAP,
    instance_config,
    prepare_dagster_home,
)
from librarian_dagster.settings import (
    CONFIG_ENV,
    DagsterSettings,
    LibrarianSettings,
    SettingsError,
    load_settings,
)

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "deployment.md"
DEPLOY_CONFIG = REPO / "deploy" / "librarian.toml"
UNIT = REPO / "deploy" / "librarian.service"
READONLY_UNIT = REPO / "deploy" / "librarian-ui-readonly.service"
# Where the guide installs deploy/librarian.toml; the file's first line says so too.
INSTALLED_CONFIG = "/etc/librarian/librarian.toml"

Unit = dict[str, list[tuple[str, str]]]


def fenced_blocks(language: str) -> list[str]:
    """The fenced code blocks of the guide in ``language`` (top-level and indented alike)."""
    pattern = rf"^[ \t]*```{language}\n(.*?)^[ \t]*```"
    return re.findall(pattern, GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)


def parse_unit(text: str) -> Unit:
    """A systemd unit as (key, value) pairs per section, repeated keys kept, in order."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(text)  # parses: sections, keys, no stray lines
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"entry outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    assert set(sections) == set(parser.sections())
    return sections


def one(unit: Unit, section: str, key: str) -> str:
    values = [value for name, value in unit[section] if name == key]
    assert len(values) == 1, f"[{section}] {key}= appears {len(values)} times"
    return values[0]


def environment(unit: Unit) -> dict[str, str]:
    pairs = [value.partition("=") for name, value in unit["Service"] if name == "Environment"]
    return {name: value for name, _, value in pairs}


def guide_unit(description: str) -> Unit:
    """The guide's copy of the unit whose Description= is ``description``."""
    matches = [
        unit
        for unit in map(parse_unit, fenced_blocks("ini"))
        if "Unit" in unit and ("Description", description) in unit["Unit"]
    ]
    assert len(matches) == 1, f"the guide shows the unit {description!r} {len(matches)} times"
    return matches[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LIBRARIAN_* overrides from the environment the tests run in."""
    for name in list(os.environ):
        if name.startswith("LIBRARIAN_"):
            monkeypatch.delenv(name)


@pytest.fixture
def deployed(clean_env: None) -> LibrarianSettings:
    return load_settings(DEPLOY_CONFIG)


# -- the production config ---------------------------------------------------------------


def test_the_deploy_config_is_a_production_config(deployed: LibrarianSettings) -> None:
    raw = tomllib.loads(DEPLOY_CONFIG.read_text())
    assert Path(raw["data_dir"]).is_absolute()
    for store in raw["stores"]:
        assert Path(store["root"]).is_absolute(), store["name"]
        assert "inbox" not in store or Path(store["inbox"]).is_absolute()
    assert DEPLOY_CONFIG.read_text().startswith(f"# {INSTALLED_CONFIG}:")

    assert deployed.config_file == DEPLOY_CONFIG.resolve()
    assert deployed.api.host == "127.0.0.1"
    assert deployed.api.public_url.startswith("https://")
    assert deployed.dagster.webserver_host == "127.0.0.1"
    assert deployed.dagster.run_launcher == "default"
    # The catalogue speaks psycopg 3, Dagster's storage psycopg2; neither URL holds a secret.
    catalogue, dagster = make_url(deployed.database_url), make_url(deployed.dagster.postgres_url)
    assert catalogue.drivername == "postgresql+psycopg"
    assert dagster.drivername == "postgresql"
    assert catalogue.password is None and dagster.password is None
    assert (catalogue.username, catalogue.host) == (dagster.username, dagster.host)  # one role
    assert catalogue.database != dagster.database  # two databases

    config = instance_config(deployed)
    assert config["storage"] == {"postgres": {"postgres_url": {"env": DAGSTER_PG_URL_ENV}}}
    assert "run_launcher" not in config


def test_the_dagster_ui_binds_to_loopback_by_default() -> None:
    assert DagsterSettings().webserver_host == "127.0.0.1"


def test_the_environment_may_point_the_databases_elsewhere(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalogue = "postgresql+psycopg://librarian@db.example.org:5432/other_catalogue"
    dagster = "postgresql://librarian@db.example.org:5432/other_dagster"
    monkeypatch.setenv("LIBRARIAN_DATABASE_URL", catalogue)
    monkeypatch.setenv("LIBRARIAN_DAGSTER__POSTGRES_URL", dagster)
    settings = load_settings(DEPLOY_CONFIG)
    assert settings.database_url == catalogue
    assert settings.dagster.postgres_url == dagster
    assert settings.data_dir == Path(tomllib.loads(DEPLOY_CONFIG.read_text())["data_dir"])


def test_the_guide_shows_the_deploy_config(clean_env: None) -> None:
    shown = [block for block in fenced_blocks("toml") if block.startswith(f"# {INSTALLED_CONFIG}")]
    assert len(shown) == 1, "the guide must show deploy/librarian.toml exactly once"
    assert tomllib.loads(shown[0]) == tomllib.loads(DEPLOY_CONFIG.read_text())


def test_every_toml_block_in_the_guide_is_valid_config(clean_env: None, tmp_path: Path) -> None:
    blocks = fenced_blocks("toml")
    assert len(blocks) >= 4
    for number, block in enumerate(blocks):
        path = tmp_path / f"block{number}.toml"
        path.write_text(block)
        try:
            load_settings(path)
        except SettingsError as error:
            pytest.fail(f"the guide's TOML block {number} does not load: {error}")


# -- the systemd units -------------------------------------------------------------------


def test_the_unit_runs_serve_with_the_config_as_the_service_user(
    deployed: LibrarianSettings,
) -> None:
    unit = parse_unit(UNIT.read_text())
    assert one(unit, "Service", "User") == "librarian"
    assert one(unit, "Service", "WorkingDirectory") == str(deployed.data_dir)
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "KillMode") == "mixed"
    # serve's own grace period (then SIGKILL) plus uvicorn's graceful shutdown fit inside.
    assert int(one(unit, "Service", "TimeoutStopSec")) > GRACE_SECONDS + 10
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert environment(unit)["PGPASSFILE"] == "/etc/librarian/pgpass"

    serve = shlex.split(one(unit, "Service", "ExecStart"))
    assert serve == ["/srv/librarian/.venv/bin/librarian", "--config", INSTALLED_CONFIG, "serve"]
    # Migrations are an operator's deliberate step (after a backup), never a restart's.
    assert "ExecStartPre" not in {name for name, _ in unit["Service"]}
    init = [*serve[:-1], "init"]
    # The command line is one the CLI accepts (--config is an option of `librarian` itself).
    try:
        for argv in (serve, init):
            result = CliRunner().invoke(app, [*argv[1:], "--help"])
            assert result.exit_code == 0, result.output
            assert "Usage" in result.output
    finally:
        set_config(None)

    assert guide_unit(one(unit, "Unit", "Description")) == unit


def test_the_read_only_ui_unit_opens_the_same_instance(deployed: LibrarianSettings) -> None:
    main = parse_unit(UNIT.read_text())
    unit = parse_unit(READONLY_UNIT.read_text())
    assert one(unit, "Service", "User") == one(main, "Service", "User")
    assert one(unit, "Unit", "Requires") == "librarian.service"
    env = environment(unit)
    assert env["DAGSTER_HOME"] == str(deployed.dagster_home)
    # dagster.yaml names this variable for the storage URL; it must be the configured one.
    assert env[DAGSTER_PG_URL_ENV] == deployed.dagster.postgres_url
    assert env["PGPASSFILE"] == environment(main)["PGPASSFILE"]

    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert argv[0] == "/srv/librarian/.venv/bin/dagster-webserver"
    assert "--read-only" in argv
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options["-w"] == str(deployed.dagster_home / "workspace.yaml")
    assert options["-h"] == "127.0.0.1"
    assert int(options["-p"]) != deployed.dagster.webserver_port

    assert guide_unit(one(unit, "Unit", "Description")) == unit


# -- run launchers -----------------------------------------------------------------------

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: not-a-token}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: librarian}}]
current-context: test
"""

LAUNCHERS = {
    "default": {},
    "docker": {"run_launcher_image": "registry.example.org/librarian:0.1.0"},
    "k8s": {"run_launcher_image": "registry.example.org/librarian:0.1.0"},
}


def launcher_class(kind: str) -> type:
    if kind == "docker":
        from dagster_docker import DockerRunLauncher

        return DockerRunLauncher
    if kind == "k8s":
        from dagster_k8s import K8sRunLauncher

        return K8sRunLauncher
    return dg.DefaultRunLauncher


@pytest.fixture
def dagster_pg_url(postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Dagster storage in a throwaway schema, as ``serve`` hands it to its children."""
    url = postgres_schema_url.replace("postgresql+psycopg://", "postgresql://", 1)
    monkeypatch.setenv(DAGSTER_PG_URL_ENV, url)
    yield url


def test_a_run_launcher_needs_an_image(make_settings: Callable[..., LibrarianSettings]) -> None:
    with pytest.raises(SettingsError, match="dagster: run_launcher 'docker' needs run_launcher"):
        make_settings(extra_toml='[dagster]\nrun_launcher = "docker"')


@pytest.mark.parametrize("kind", ["docker", "k8s"])
def test_a_run_launcher_needs_postgres(
    kind: str, make_settings: Callable[..., LibrarianSettings]
) -> None:
    # Refused when the settings load, before init has touched anything.
    with pytest.raises(SettingsError, match=r"dagster: .*needs postgres_url"):
        make_settings(dagster={"run_launcher": kind, **LAUNCHERS[kind]})


def test_docker_runs_see_the_stores_and_config_at_the_same_paths(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    settings = make_settings(
        extra_toml=f'[[stores]]\nname = "big"\nroot = "{outside}/big"\ninbox = "{outside}/in"\n',
        data_dir=str(tmp_path / "var"),
        dagster={
            "postgres_url": "postgresql://librarian:hunter2@db:5432/dagster",
            "run_launcher": "docker",
            "run_launcher_image": "registry.example.org/librarian:0.1.0",
            "run_launcher_network": "librarian",
            "run_launcher_env": ["PGPASSWORD", DAGSTER_PG_URL_ENV],
            "run_launcher_config": {"container_kwargs": {"user": "981:981"}},
        },
    )
    launcher = instance_config(settings)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    config = launcher["config"]
    assert config["image"] == "registry.example.org/librarian:0.1.0"
    assert config["network"] == "librarian"
    assert config["env_vars"] == [CONFIG_ENV, DAGSTER_PG_URL_ENV, "PGPASSWORD"]
    assert config["container_kwargs"]["user"] == "981:981"  # merged, binds kept
    main = settings.store("main").root  # tmp_path/stores/main: not under data_dir
    binds = config["container_kwargs"]["volumes"]
    assert sorted(binds[:-1]) == sorted(
        f"{path}:{path}" for path in (main, outside / "big", outside / "in", settings.data_dir)
    )
    assert binds[-1] == f"{settings.config_file}:{settings.config_file}:ro"
    # The storage URL (and its password) stays out of the files.
    home = prepare_dagster_home(settings)
    assert "hunter2" not in (home / "dagster.yaml").read_text()


def test_docker_binds_skip_stores_inside_the_data_dir(
    make_settings: Callable[..., LibrarianSettings], tmp_path: Path
) -> None:
    settings = make_settings(
        data_dir=str(tmp_path),
        dagster={
            "postgres_url": "postgresql://db/d",
            "run_launcher": "docker",
            **LAUNCHERS["docker"],
        },
    )
    binds = instance_config(settings)["run_launcher"]["config"]["container_kwargs"]["volumes"]
    assert binds == [f"{tmp_path}:{tmp_path}"]  # the store and config file are inside it


@pytest.mark.postgres
@pytest.mark.parametrize("kind", list(LAUNCHERS))
def test_each_run_launcher_loads_as_a_real_instance(
    kind: str,
    make_settings: Callable[..., LibrarianSettings],
    dagster_pg_url: str,
    tmp_path: Path,
) -> None:
    extra: dict[str, Any] = dict(LAUNCHERS[kind])
    if kind == "k8s":
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        extra |= {"run_launcher_namespace": "librarian", "run_launcher_kubeconfig": str(kubeconfig)}
    settings = make_settings(
        dagster={"postgres_url": dagster_pg_url, "run_launcher": kind, **extra}
    )
    home = prepare_dagster_home(settings)
    written = yaml.safe_load((home / "dagster.yaml").read_text())
    assert ("run_launcher" in written) == (kind != "default")
    for filename in ("dagster.yaml", API_INSTANCE_FILE):
        with dg.DagsterInstance.from_config(str(home), config_filename=filename) as instance:
            launcher = instance.run_launcher
            assert type(launcher) is launcher_class(kind), filename
            if kind == "k8s":
                assert launcher.job_namespace == "librarian"
                assert launcher.instance_config_map == K8S_INSTANCE_CONFIG_MAP
            if kind == "docker":
                assert launcher.image == "registry.example.org/librarian:0.1.0"


def check_k8s_models(config: dict[str, Any]) -> None:
    """Kubernetes objects in a launcher config have only keys their models know."""
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict

    models = {
        "volumes": kubernetes.client.V1Volume,
        "volume_mounts": kubernetes.client.V1VolumeMount,
        "security_context": kubernetes.client.V1SecurityContext,
    }
    for key, model in models.items():
        values = config.get(key)
        for value in values if isinstance(values, list) else [values] if values else []:
            k8s_model_from_dict(model, value)


@pytest.mark.postgres
def test_the_guides_launcher_examples_load_as_real_instances(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, dagster_pg_url: str, tmp_path: Path
) -> None:
    """The guide's Kubernetes and Docker blocks are configs the launchers accept."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    # Reachable here instead of the guide's example hosts and paths.
    monkeypatch.setenv("LIBRARIAN_DAGSTER__POSTGRES_URL", dagster_pg_url)
    monkeypatch.setenv("LIBRARIAN_DAGSTER__RUN_LAUNCHER_KUBECONFIG", str(kubeconfig))
    seen = set()
    for number, block in enumerate(fenced_blocks("toml")):
        kind = tomllib.loads(block).get("dagster", {}).get("run_launcher", "default")
        if kind == "default":
            continue
        directory = tmp_path / f"block{number}"
        directory.mkdir()
        (directory / "librarian.toml").write_text(block)
        settings = load_settings(directory / "librarian.toml")
        home = prepare_dagster_home(settings)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_launcher) is launcher_class(kind)
        if kind == "k8s":  # the launcher checks these only when it builds a Job
            check_k8s_models(settings.dagster.run_launcher_config)
        seen.add(kind)
    assert seen == {"docker", "k8s"}

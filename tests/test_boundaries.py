"""The layers stay apart: what each package may import, no import loops, small modules.

Read from the source (every ``import``, also those inside functions, except under
``if TYPE_CHECKING:``) and checked again at run time in a fresh interpreter, so that neither
a lazy import nor a transitive one can smuggle Dagster into the core or the ORM into the
client.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "librarian_dagster"
TOP = "librarian_dagster"

ORCHESTRATION = ("dagster", "dagster_graphql", "dagster_postgres", "dagster_slack")
WEB = ("litestar", "httpx", "uvicorn")
# Modules of our own that belong to the Dagster, HTTP or user-facing layers.
OUTER_LAYERS = tuple(
    f"{TOP}.{name}"
    for name in (
        "jobs",
        "sensors",
        "assets",
        "resources",
        "definitions",
        "dagster_instance",
        "peer_links",
        "api",
        "client",
        "cli",
    )
)
CORE = ("services", "catalogue", "storage")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*packages: str) -> Iterator[tuple[str, Path]]:
    roots = [PACKAGE / package for package in packages] if packages else [PACKAGE]
    for root in roots:
        files = [root.with_suffix(".py")] if root.with_suffix(".py").is_file() else []
        files += sorted(root.rglob("*.py")) if root.is_dir() else []
        for path in files:
            if "migrations" not in path.parts:
                yield module_name(path), path


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), wherever in the file, but typing-only."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(
                    ".py"
                ).is_file() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).is_file()
                found.add(candidate if is_module else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def offending(imported: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in imported if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("name,path", list(modules(*CORE)), ids=lambda v: str(v))
def test_the_core_imports_no_orchestrator_web_or_outer_layer(name: str, path: Path) -> None:
    bad = offending(imports_of(path), ORCHESTRATION + WEB + OUTER_LAYERS)
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name,path", list(modules("wire", "states")), ids=lambda v: str(v))
def test_wire_models_and_states_import_no_orm_web_or_orchestrator(name: str, path: Path) -> None:
    bad = offending(imports_of(path), ("sqlalchemy", "alembic", *ORCHESTRATION, *WEB))
    bad += offending(imports_of(path), tuple(f"{TOP}.{p}" for p in (*CORE, "settings")))
    assert not bad, f"{name} imports {bad}"


def test_the_dagster_names_need_no_dagster() -> None:
    """The CLI writes them into dagster.yaml without loading Dagster."""
    assert imports_of(PACKAGE / "jobs" / "names.py") == set()
    assert not loaded_after("import librarian_dagster.jobs.names") & set(ORCHESTRATION)


@pytest.mark.parametrize("name,path", list(modules("client")), ids=lambda v: str(v))
def test_the_client_imports_no_orm_server_or_orchestrator(name: str, path: Path) -> None:
    forbidden = ("sqlalchemy", "litestar", *ORCHESTRATION, f"{TOP}.catalogue", f"{TOP}.api")
    bad = offending(imports_of(path), (*forbidden, f"{TOP}.services", f"{TOP}.settings"))
    assert not bad, f"{name} imports {bad}"


def loaded_after(statement: str) -> set[str]:
    """Top-level module names loaded by ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {line.split(".")[0] for line in out.splitlines()}


def test_importing_the_client_loads_no_sqlalchemy_litestar_or_dagster() -> None:
    loaded = loaded_after("import librarian_dagster.client")
    assert not loaded & {"sqlalchemy", "litestar", "dagster", "alembic"}, sorted(
        loaded & {"sqlalchemy", "litestar", "dagster", "alembic"}
    )


def test_importing_every_service_loads_no_dagster_litestar_or_httpx() -> None:
    names = [name for name, _ in modules(*CORE)]
    loaded = loaded_after("\n".join(f"import {name}" for name in names))
    assert not loaded & {*ORCHESTRATION, *WEB}, sorted(loaded & {*ORCHESTRATION, *WEB})


def test_no_import_loops_inside_the_package() -> None:
    graph = {
        name: {i for i in imports_of(path) if i.startswith(TOP + ".") or i == TOP}
        for name, path in modules()
    }
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == "open":
                loop = [*stack[stack.index(target) :], target]
                raise AssertionError("import loop: " + " -> ".join(loop))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)


# The few private imports with no public equivalent, each with its reason where it is used.
PRIVATE_DAGSTER_ALLOWED = {
    # A run origin for in-process runs, so the UI can re-execute them (dagster#19458).
    "librarian_dagster.jobs.api_executor": {"dagster._core.remote_origin"},
}


def test_no_private_dagster_api_is_imported() -> None:
    private = {
        name: set(
            offending(imports_of(path), ("dagster._core", "dagster._daemon", "dagster._utils"))
        )
        - PRIVATE_DAGSTER_ALLOWED.get(name, set())
        for name, path in modules()
    }
    assert not {name: bad for name, bad in private.items() if bad}


def test_services_hold_no_dagster_vocabulary() -> None:
    """Job, op, partition and tag names belong to ``jobs.names``, never to the core."""
    from librarian_dagster.jobs import names

    vocabulary = {
        value
        for key, value in vars(names).items()
        if key.endswith(("_JOB", "_OP", "_TAG", "_PARTITIONS", "_NAME")) and isinstance(value, str)
    }
    assert {"ingest_books", "verify_and_store", "librarian/kind", "books"} <= vocabulary
    for name, path in modules(*CORE):
        constants = {
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert not constants & vocabulary, f"{name} spells {sorted(constants & vocabulary)}"


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: lines
        for name, path in modules()
        if (lines := len(path.read_text().splitlines())) > 400
    }
    assert not long

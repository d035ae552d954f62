"""The byte movers this librarian can use, built from its settings (nothing connects yet).

``local`` always exists (tasks under ``<data_dir>/movers/local``); ``globus`` when the config
has a ``[globus]`` section. The Globus secret is read from the environment variable the
config names, and only when the first Globus call is made: building the movers (at a run's
start, in a sensor) never touches the network or the secret.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from librarian_dagster.services.errors import Unavailable
from librarian_dagster.settings import GlobusSettings, LibrarianSettings
from librarian_dagster.states import MoverName
from librarian_dagster.storage.movers.local import LocalMover
from librarian_dagster.storage.movers.protocol import Mover, MoverError, MoverUnavailable

LOCAL_MOVER_DIR = ("movers", "local")


def _secret_reader(globus: GlobusSettings) -> Callable[[], str]:
    def read() -> str:
        secret = os.environ.get(globus.client_secret_env)
        if not secret:
            raise MoverError(
                f"{globus.client_secret_env} is not set: the Globus client secret comes from "
                "the environment variable [globus] client_secret_env names",
                needs_operator=True,
            )
        return secret

    return read


def build_movers(settings: LibrarianSettings) -> dict[str, Mover]:
    """Every mover these settings allow, by name."""
    movers: dict[str, Mover] = {
        MoverName.LOCAL: LocalMover(settings.data_dir.joinpath(*LOCAL_MOVER_DIR)),
    }
    globus = settings.globus
    if globus is not None:
        from librarian_dagster.storage.movers.globus import GlobusMover

        movers[MoverName.GLOBUS] = GlobusMover(
            client_id=globus.client_id,
            client_secret=_secret_reader(globus),
            collection_id=globus.collection_id,
            path_prefix=globus.path_prefix,
            local_root=globus.local_root,
            sync_level=globus.sync_level,
        )
    return movers


def mover_named(movers: dict[str, Mover], name: str) -> Mover:
    """The mover called ``name``, or ``MoverUnavailable`` (an operator must configure it)."""
    if name not in movers:
        raise MoverUnavailable(name, list(movers))
    return movers[name]


def require_mover(settings: LibrarianSettings, name: str) -> None:
    """Refuse (503) a peer whose mover this librarian cannot use."""
    if name == MoverName.GLOBUS and settings.globus is None:
        raise Unavailable("the globus mover needs a [globus] section in this librarian's config")
    if name not in {mover.value for mover in MoverName}:
        raise Unavailable(f"unknown mover {name!r} (known: local, globus)")

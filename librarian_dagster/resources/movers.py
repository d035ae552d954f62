"""The ``mover`` resource: this librarian's byte movers between librarians, by name.

A peer names the mover that carries books to it (``local`` or ``globus``, SPEC §5); runs
ask this resource for it. The movers themselves live in ``storage.movers`` behind one
protocol (submit a batch, poll, cancel). The clone flow brings ``LocalMover`` and
``GlobusMover``; until then no mover is available, and asking for one says so in a line an
operator can act on rather than failing somewhere deep in a run.
"""

from __future__ import annotations

from librarian_dagster.resources.librarian import SettingsResource
from librarian_dagster.storage.movers.protocol import Mover, MoverUnavailable


class MoverResource(SettingsResource):
    """``mover.get(name)``: the mover called ``name``, built lazily (no network at load)."""

    def available(self) -> dict[str, Mover]:
        """The movers this librarian can use with its settings, by name."""
        return {}

    def get(self, name: str) -> Mover:
        movers = self.available()
        if name not in movers:
            raise MoverUnavailable(name, list(movers))
        return movers[name]

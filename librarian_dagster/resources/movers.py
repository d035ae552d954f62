"""The ``mover`` resource: this librarian's byte movers between librarians, by name.

A peer names the mover that carries books to it (``local`` or ``globus``, SPEC §5); runs
and sensors ask this resource for it. The movers live in ``storage.movers`` behind one
protocol (submit a batch, poll, cancel) and are built from the settings by
``services.movers`` when first asked for (no network, no secret read at load); asking for a
mover the config does not provide says so in a line an operator can act on.
"""

from __future__ import annotations

from pydantic import PrivateAttr

from librarian_dagster.resources.librarian import SettingsResource
from librarian_dagster.services.movers import build_movers, mover_named
from librarian_dagster.storage.movers.protocol import Mover


class MoverResource(SettingsResource):
    """``mover.get(name)``: the mover called ``name``, built lazily (no network at load)."""

    _movers: dict[str, Mover] | None = PrivateAttr(default=None)

    def available(self) -> dict[str, Mover]:
        """The movers this librarian can use with its settings, by name."""
        if self._movers is None:
            self._movers = build_movers(self.settings)
        return self._movers

    def get(self, name: str) -> Mover:
        return mover_named(self.available(), name)

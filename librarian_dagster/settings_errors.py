"""One-line explanations of unusable settings, naming what really set the bad value.

Every key can come from the TOML file or a ``LIBRARIAN_*`` variable that overrides it; an
error that named the file for a value the environment set would send the operator to the
wrong place, so the variable is named when one set it.
"""

from __future__ import annotations

import os
import re

from pydantic import ValidationError

ENV_PREFIX = "LIBRARIAN_"
NO_FILE = "settings"  # how errors name the source when there is no config file


def _env_name(location: tuple[int | str, ...]) -> str | None:
    """The ``LIBRARIAN_*`` variable that set the value at ``location``, if one did.

    pydantic-settings reads ``LIBRARIAN_API__PORT`` for ``api.port`` (case-insensitive) and,
    for a section, a JSON object in ``LIBRARIAN_API``: the longest set prefix is the culprit.
    """
    wanted = {name.upper(): name for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    parts = [str(part) for part in location]
    for end in range(len(parts), 0, -1):
        candidate = ENV_PREFIX + "__".join(parts[:end]).upper()
        if candidate in wanted:
            return wanted[candidate]
    return None


def format_validation_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    variable = _env_name(tuple(first["loc"]))
    if variable is not None:  # the environment overrides the file: name what really set it
        where = "environment" if source == NO_FILE else f"environment, overrides {source}"
        return f"{variable} ({where}): {location}: {message}{suffix}"
    return f"{source}: {location}: {message}{suffix}"


def format_value_error(error: ValueError, source: str) -> str:
    """A TOML syntax error, or a section given in the environment that is not JSON."""
    found = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(error))
    if found is not None:
        variable = _env_name((found.group(1),)) or ENV_PREFIX + found.group(1).upper()
        return f"{variable} (environment): not a JSON object for the [{found.group(1)}] section"
    return f"{source}: {error}"

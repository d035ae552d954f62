"""Human units for byte counts: one spelling for the CLI, the API's clients and Dagster metadata.

Binary prefixes (KiB = 1024 bytes), one decimal: ``1536`` → ``1.5 KiB``; fewer than 1024
bytes are shown whole (``512 B``). Imports nothing: the client and the jobs may both use it.
"""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(n: int) -> str:
    """``n`` bytes in binary units, e.g. ``1.5 GiB``; ``512 B`` below one KiB."""
    if abs(n) < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in _UNITS[:-1]:
        # Rounded first, so 1023.96 KiB shows as 1.0 MiB rather than 1024.0 KiB.
        if abs(round(value, 1)) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} {_UNITS[-1]}"

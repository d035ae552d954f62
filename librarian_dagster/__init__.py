"""librarian_dagster: research-data management for big-science collaborations, on Dagster."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("librarian_dagster")
except PackageNotFoundError:  # running from a checkout without an install
    __version__ = "0.0.0"

"""The ``book`` asset: one partition per catalogued file, keyed by its name.

A book's bytes arrive by upload, inbox, clone or drive, never by recomputation, so ``book``
is declared as an asset *spec* (Dagster shows and tracks it; there is nothing to "re-run")
and the ``ingest_books`` job reports a materialization for exactly the books it stored, with
their size, checksum, store, path, seconds and MB/s. A book that fails verification gets no
materialization and its partition is removed: no partition claims a book that is not stored.

Its asset check, ``checksums_match``, is the integrity flow's (``assets.integrity``).
"""

import dagster as dg

from librarian_dagster.jobs.names import BOOKS_PARTITIONS

BOOK_KEY = dg.AssetKey("book")
GROUP = "library"

books_partitions = dg.DynamicPartitionsDefinition(name=BOOKS_PARTITIONS)

book = dg.AssetSpec(
    key=BOOK_KEY,
    partitions_def=books_partitions,
    group_name=GROUP,
    description=(
        "An immutable file or directory in this librarian's stores, one partition per name. "
        "Materialized by ingest_books when a staged book is verified and stored."
    ),
    kinds={"file"},
)


ASSETS = [book]

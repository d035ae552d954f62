"""The ``book`` asset: one partition per catalogued file, keyed by its name.

A book's bytes arrive by upload, inbox, clone or drive, never by recomputation, so ``book``
is declared as an asset *spec* (Dagster shows and tracks it; there is nothing to "re-run")
and the ``ingest_books`` job reports a materialization for exactly the books it stored, with
their size, checksum, store, path, seconds and MB/s. A book that fails verification gets no
materialization and its partition is removed: no partition claims a book that is not stored.

The ``checksums_match`` asset check re-reads stored copies and compares them with the
checksum taken at ingest, oldest verification first, a bounded number per execution.
"""

import dagster as dg
from pydantic import Field

from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.services.ingest_requests import BOOKS_PARTITIONS
from librarian_dagster.services.verify import verify_instances

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


class ChecksumCheckConfig(dg.Config):
    names: list[str] = Field(
        default=[], description="Books to verify; empty = the least recently verified."
    )
    max_books: int = Field(default=20, ge=1, description="Upper bound per execution.")


@dg.asset_check(
    asset=BOOK_KEY,
    name="checksums_match",
    description="Re-read stored copies and compare with the checksum taken at ingest.",
)
def checksums_match(
    context: dg.AssetCheckExecutionContext,
    config: ChecksumCheckConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
) -> dg.AssetCheckResult:
    report = verify_instances(
        catalogue.catalogue, stores.all(), names=config.names, limit=config.max_books
    )
    for line in report.lines():
        context.log.info(line)
    return dg.AssetCheckResult(
        passed=not report.corrupt and not report.missing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "verified": len(report.good),
            "corrupt": dg.MetadataValue.json(report.corrupt),
            "missing": dg.MetadataValue.json(report.missing),
            "bytes": report.bytes_read,
            "seconds": round(report.seconds, 3),
        },
    )

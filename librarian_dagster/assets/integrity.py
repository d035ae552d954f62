"""``checksums_match``: the asset check on ``book`` that re-reads stored copies.

It compares each copy with the checksum taken at ingest, least recently verified first (or
the books named in its config), a bounded number per execution, through
``services.integrity.verify_instances``, which records what it finds. Dagster 1.13's
partitioned asset checks are a preview and could not be executed against an asset spec, so
the check is per asset and lists the books it read in its metadata.
"""

import dagster as dg
from pydantic import Field

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.services.integrity import verify_instances


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


ASSET_CHECKS = [checksums_match]

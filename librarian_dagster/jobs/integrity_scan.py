"""``scan_store``: ``librarian scan`` (and ``rebuild``) from the UI's launchpad;
``clean_staging``: leftover staging of failed and cancelled transfers removed, the rest
reported (``services.integrity_staging``), hourly by ``clean_staging_schedule``
(``sensors/integrity.py``).

Config ``store`` (required), ``rebuild`` (default false: only report) and ``verify``
(rebuild reads every book against its sidecar unless false). A scan that found dark or
missing data or a disagreement, or a rebuild that met a corrupt book, a conflict or an
unreadable sidecar, fails its run: the findings are in the run's metadata and log.
"""

import dagster as dg
from pydantic import Field

from librarian_dagster.jobs.names import (
    KIND_TAG,
    MAINTENANCE_KIND,
    SCAN_JOB,
    SCAN_OP,
    STAGING_JOB,
    STAGING_OP,
)
from librarian_dagster.resources.librarian import CatalogueResource, StoresResource
from librarian_dagster.services.integrity_rebuild import rebuild_store, scan_store
from librarian_dagster.services.integrity_staging import clean_staging

LISTED = 200


class ScanConfig(dg.Config):
    store: str = Field(description="The store to scan (or rebuild the catalogue from).")
    rebuild: bool = Field(default=False, description="Rebuild files and instances first.")
    verify: bool = Field(default=True, description="Rebuild: read each book's checksum.")


@dg.op(name=SCAN_OP, out=dg.Out(dg.Nothing))
def scan_or_rebuild_store(
    context: dg.OpExecutionContext,
    config: ScanConfig,
    catalogue: CatalogueResource,
    stores: StoresResource,
) -> None:
    every = stores.all()
    if config.store not in every:
        raise dg.Failure(f"no store {config.store!r} (stores: {', '.join(every)})")
    store = every[config.store]
    problems = 0
    if config.rebuild:
        rebuilt = rebuild_store(catalogue.catalogue, store, verify=config.verify)
        trouble = [*rebuilt.corrupt, *rebuilt.conflicts, *rebuilt.unreadable]
        for line in trouble[:LISTED]:
            context.log.error(f"REBUILD: {line}")
        problems += len(trouble)
        context.add_output_metadata(
            {"recorded": len(rebuilt.recorded), "already": rebuilt.already, "problems": problems}
        )
    report = scan_store(catalogue.catalogue, store)
    for label, names in (
        ("DARK", report.dark),
        ("MISSING", report.missing),
        ("DISAGREES", report.disagreements),
    ):
        for name in names[:LISTED]:
            context.log.error(f"{label}: {name}")
    context.add_output_metadata(
        {
            "books on disk": report.books_on_disk,
            "catalogued": report.catalogued,
            "dark": dg.MetadataValue.json(report.dark[:LISTED]),
            "missing": dg.MetadataValue.json(report.missing[:LISTED]),
            "disagreements": dg.MetadataValue.json(report.disagreements[:LISTED]),
        }
    )
    if problems or not report.clean:
        raise dg.Failure(
            description=(
                f"store {config.store}: {len(report.dark)} dark, {len(report.missing)} "
                f"missing, {len(report.disagreements)} disagreements, {problems} rebuild "
                "problems; nothing was deleted"
            )
        )


@dg.job(
    name=SCAN_JOB,
    tags={KIND_TAG: MAINTENANCE_KIND},
    description="Report dark and missing data in a store (optionally rebuild the catalogue).",
)
def scan_store_job() -> None:
    scan_or_rebuild_store()


@dg.op(name=STAGING_OP, out=dg.Out(dg.Nothing))
def remove_leftover_staging(
    context: dg.OpExecutionContext, catalogue: CatalogueResource, stores: StoresResource
) -> None:
    removed: dict[str, int] = {}
    reported: dict[str, list[str]] = {}
    failed = 0
    for name, store in stores.all().items():
        if not store.staging_dir.is_dir():
            continue  # a drive away on its trip
        report = clean_staging(catalogue.catalogue, store)
        removed[name] = len(report.removed)
        reported[name] = [f"{staging}: {why}" for staging, why in report.reported[:LISTED]]
        for line in reported[name]:
            context.log.warning(f"LEFT IN STAGING of {name}: {line}")
        for staging, why in report.failed:
            context.log.error(f"could not remove staging {staging} of {name}: {why}")
        failed += len(report.failed)
    context.add_output_metadata(
        {"removed": dg.MetadataValue.json(removed), "reported": dg.MetadataValue.json(reported)}
    )
    if failed:
        raise dg.Failure(description=f"{failed} leftover staging directories could not be removed")


@dg.job(
    name=STAGING_JOB,
    tags={KIND_TAG: MAINTENANCE_KIND},
    description="Remove staging left by failed or cancelled transfers; report unknown ones.",
)
def clean_staging_job() -> None:
    remove_leftover_staging()


JOBS = [scan_store_job, clean_staging_job]

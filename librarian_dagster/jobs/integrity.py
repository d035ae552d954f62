"""``verify_integrity``: the scheduled pass that re-reads stored copies.

The job runs the ``book`` asset's ``checksums_match`` check (``assets.integrity``) with
``scheduled: true``: copies due for a re-read, oldest-verified first, within
``[integrity]``'s byte and time budget, with the burst guard on. Its evaluation is the
check's history in the UI; a pass that found a bad copy, or left one unrepaired, fails.
Launching it by hand (launchpad, ``dagster job launch -j verify_integrity``) does the same
pass; ``scheduled: false`` with ``names`` re-reads given books.

Runs carry ``librarian/kind: integrity``, which the run queue limits to one at a time: one
reader, large sequential reads, the disks left to ingest between passes.
"""

import dagster as dg

from librarian_dagster.assets.integrity import checksums_match
from librarian_dagster.jobs.names import INTEGRITY_KIND, KIND_TAG, VERIFY_JOB, VERIFY_OP

verify_integrity = dg.define_asset_job(
    VERIFY_JOB,
    selection=dg.AssetSelection.checks(checksums_match),
    description=(
        "Re-read stored copies that are due (every copy within [integrity] period_days), "
        "record bad ones, alert, and guard a store with a burst of them."
    ),
    tags={KIND_TAG: INTEGRITY_KIND},
    config={"ops": {VERIFY_OP: {"config": {"scheduled": True}}}},
)

JOBS = [verify_integrity]

"""The SneakerNet sensors: keep filling drives filled, show what is on them, ingest drives.

``sneaker_fill_sensor`` (every 30 s): a drive that is filling, enabled, mounted and the
right one, with books newer than its fill mark (``services.sneaker_plan.fills_due``: one max
over the primary key, one row per drive), gets a ``fill_sneaker_drive`` run, unless a fill
is already queued or running (they run one at a time). The run key is the drive, its mark
and the newest book: new books ask again, a fill that could not move the mark does not
ask again and again. A drive that is away or not the right one is named in the skip
reason, never filled. A fill ``stuck_runs_sensor`` cancelled is asked for again (the stall
count is part of the key) until ``[transfer] max_attempts`` fills stalled; then the drive
is named in the skip reason until the ``run_stuck`` event is resolved.

``drive_copies_sensor`` (every 30 s): for the copies recorded on drives since its last tick
(per drive, after the last one it saw by time of recording and id, at most ``PER_TICK``),
the book's partition gets an observation listing every copy we know of, so the UI shows
which drives hold it. (Not by id alone: SQLite hands a wiped drive's ids out again.)

``sneaker_ingest_sensor`` (every 5 s), at the destination: a drive whose books
``POST /sneaker/ingest`` recorded as waiting, with no run asked for (or one overdue:
``[ingest] relaunch_after_seconds``) and none under way, gets an ``ingest_sneaker_drive``
run (not for a drive whose ingests stalled ``max_attempts`` times, as for fills). Books a
run copied but did not store are the ingest sensor's, like any staged book.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from librarian_dagster.assets.book import BOOK_KEY
from librarian_dagster.jobs.names import (
    DRIVE_INGEST_JOB,
    DRIVE_INGEST_KIND,
    DRIVE_INGEST_OP,
    DRIVE_TAG,
    FILL_JOB,
    FILL_KIND,
    FILL_OP,
    KIND_TAG,
    STORE_TAG,
)
from librarian_dagster.jobs.run_liveness import ACTIVE_RUN_STATUSES
from librarian_dagster.jobs.sneaker import fill_sneaker_drive, ingest_sneaker_drive
from librarian_dagster.resources.librarian import CatalogueResource
from librarian_dagster.services.copies import copies_of, drive_copies_since
from librarian_dagster.services.integrity_stuck import out_of_tries, stuck_key, stuck_tries
from librarian_dagster.services.sneaker_copy import drives_to_ingest, mark_drive_launched
from librarian_dagster.services.sneaker_plan import fills_due

PER_TICK = 1000


@dg.sensor(
    name="sneaker_fill_sensor",
    job=fill_sneaker_drive,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps filling sneaker drives filled: a fill_sneaker_drive run as books arrive.",
)
def sneaker_fill_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    settings = catalogue.settings
    declared = {config.name: config for config in settings.stores}
    with catalogue.session() as session:
        due, problems = fills_due(session, settings, declared)
        tries = {fill.store: stuck_tries(session, FILL_JOB, fill.store) for fill in due}
        keys = {fill.store: stuck_key(session, FILL_JOB, fill.store) for fill in due}
    for fill in due:
        if why := out_of_tries(tries[fill.store], settings.transfer.max_attempts):
            problems[fill.store] = why
    due = [fill for fill in due if fill.store not in problems]
    away = "; ".join(f"{store}: {problem}" for store, problem in sorted(problems.items()))
    if not due:
        return dg.SensorResult(skip_reason=away or "no filling drive lacks a newer book")
    pending = context.instance.get_runs(
        dg.RunsFilter(job_name=FILL_JOB, statuses=ACTIVE_RUN_STATUSES), limit=1
    )
    if pending:
        return dg.SensorResult(skip_reason=f"a fill is under way (run {pending[0].run_id})")
    requests = [
        dg.RunRequest(
            job_name=FILL_JOB,
            run_key=(
                f"fill:{fill.store}:{fill.drive_uuid}:{fill.trip}:{fill.mark}:{fill.newest}"
                # A fill cancelled as stuck is asked for again, a bounded number of times.
                + keys[fill.store]
            ),
            run_config={"ops": {FILL_OP: {"config": {"store": fill.store}}}},
            tags={KIND_TAG: FILL_KIND, STORE_TAG: fill.store},
        )
        for fill in due
    ]
    if away:
        context.log.info(f"not filled: {away}")
    return dg.SensorResult(run_requests=requests)


@dg.sensor(
    name="drive_copies_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Shows copies put on sneaker drives: observes each book's partition.",
)
def drive_copies_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    seen: dict[str, list[str | int]] = json.loads(context.cursor) if context.cursor else {}
    with catalogue.session() as session:
        rows, seen = drive_copies_since(session, seen, limit=PER_TICK)
        copies = copies_of(session, sorted(set(rows)))
    if not rows:
        return dg.SensorResult(skip_reason="no new copy on a drive")
    events = [
        dg.AssetObservation(
            asset_key=BOOK_KEY, partition=name, metadata={"copies": "; ".join(where)}
        )
        for name, where in copies.values()
    ]
    return dg.SensorResult(asset_events=events, cursor=json.dumps(seen, sort_keys=True))


@dg.sensor(
    name="sneaker_ingest_sensor",
    job=ingest_sneaker_drive,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Asks for an ingest_sneaker_drive run for each drive with books waiting.",
)
def sneaker_ingest_sensor(
    context: dg.SensorEvaluationContext, catalogue: CatalogueResource
) -> dg.SensorResult:
    drives = drives_to_ingest(
        catalogue.catalogue,
        relaunch_after_seconds=catalogue.settings.ingest.relaunch_after_seconds,
        limit=PER_TICK,
    )
    requests = []
    now = int(datetime.now(UTC).timestamp())
    max_attempts = catalogue.settings.transfer.max_attempts
    held: list[str] = []
    for drive_uuid, path in sorted(drives.items()):
        with catalogue.session() as session:
            tries = stuck_tries(session, DRIVE_INGEST_JOB, drive_uuid)
            if why := out_of_tries(tries, max_attempts):
                held.append(f"drive {drive_uuid}: {why}")
                continue
        running = context.instance.get_runs(
            dg.RunsFilter(
                job_name=DRIVE_INGEST_JOB,
                statuses=ACTIVE_RUN_STATUSES,
                tags={DRIVE_TAG: drive_uuid},
            ),
            limit=1,
        )
        if running:
            continue
        mark_drive_launched(catalogue.catalogue, drive_uuid)
        requests.append(
            dg.RunRequest(
                job_name=DRIVE_INGEST_JOB,
                run_key=f"drive_ingest:{drive_uuid}:{now}",
                run_config={
                    "ops": {DRIVE_INGEST_OP: {"config": {"drive_uuid": drive_uuid, "drive": path}}}
                },
                tags={KIND_TAG: DRIVE_INGEST_KIND, DRIVE_TAG: drive_uuid},
            )
        )
    if not requests:
        return dg.SensorResult(
            skip_reason="; ".join(held) or "no drive has books waiting without a run"
        )
    return dg.SensorResult(run_requests=requests)


SENSORS = [sneaker_fill_sensor, drive_copies_sensor, sneaker_ingest_sensor]

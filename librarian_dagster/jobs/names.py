"""The names Dagster knows a librarian's pieces by: location, jobs, ops, partitions, tags.

Plain strings in one place, importable without Dagster: ``dagster_instance`` writes them
into ``workspace.yaml`` and ``dagster.yaml`` (the run queue limits ingest runs by the kind
tag), the API's launchers name the job they ask for, and users script against them. Job and
op names are pinned by SPEC §6; tags are how runs are told apart in the UI and the queue.
"""

LOCATION_NAME = "librarian"
# A Definitions object's repository is always called this (the GraphQL API needs it).
REPOSITORY_NAME = "__repository__"
BOOKS_PARTITIONS = "books"

INGEST_JOB = "ingest_books"
INGEST_OP = "verify_and_store"

# Cloning to peers (SPEC §6 pins the job names).
CLONE_JOB = "clone_batch"
CLONE_OP = "send_batch"
RECEIVE_JOB = "receive_clones"
RECEIVE_OP = "receive_and_store"
DELIVER_JOB = "deliver_callbacks"
DELIVER_OP = "deliver_owed_callbacks"
RECONCILE_JOB = "reconcile_clones"
RECONCILE_OP = "ask_peers_about_stale_clones"
# SneakerNet (SPEC §6 pins the fill job, its op and the op's config key ``store``).
FILL_JOB = "fill_sneaker_drive"
FILL_OP = "fill_drive"
DRIVE_INGEST_JOB = "ingest_sneaker_drive"
DRIVE_INGEST_OP = "ingest_drive"
# Keeping it right (SPEC §6 pins verify_integrity): the job runs the book's checksums_match
# check, whose op is this.
VERIFY_JOB = "verify_integrity"
VERIFY_OP = "book_checksums_match"
VERIFY_SCHEDULE = "verify_integrity_schedule"
REPAIR_JOB = "repair_copies"
ROLLING_JOB = "rolling_cleanup"
ROLLING_OP = "delete_old_copies"
ROLLING_SCHEDULE = "rolling_cleanup_schedule"
SCAN_JOB = "scan_store"
STAGING_JOB = "clean_staging"
STAGING_OP = "remove_leftover_staging"
STAGING_SCHEDULE = "clean_staging_schedule"
SCAN_OP = "scan_or_rebuild_store"
REPAIR_OP = "ask_peers_to_resend"
# The per-peer assets ("which books does this peer hold") live under this key prefix.
PEER_ASSET_PREFIX = "peers"

# What kind of work a run does; the run queue limits concurrent runs per kind.
KIND_TAG = "librarian/kind"
INGEST_KIND = "ingest"
CLONE_KIND = "clone"
RECEIVE_KIND = "receive"
CALLBACKS_KIND = "callbacks"
FILL_KIND = "fill"
DRIVE_INGEST_KIND = "drive_ingest"
INTEGRITY_KIND = "integrity"  # the integrity pass: one at a time (one reader)
REPAIR_KIND = "repair"  # asking peers to re-send bad copies
MAINTENANCE_KIND = "maintenance"  # rolling cleanup, scans, leftover staging
# Which clone batch and peer a run is about.
BATCH_TAG = "librarian/batch"
PEER_TAG = "librarian/peer"
# Which store (drive) a fill run writes to.
STORE_TAG = "librarian/store"
# Which drive (UUID) a drive's ingest run copies from.
DRIVE_TAG = "librarian/drive"
# Which books a run is about, for people reading the runs list.
BOOKS_TAG = "librarian/books"
# Where an ingest run's books come from when not from uploads ("inbox"), and which inbox
# books it registers (a digest of their names): the sensor asks once for the same books.
SOURCE_TAG = "librarian/source"
INBOX_SOURCE = "inbox"
INBOX_TAG = "librarian/inbox"

# Runs executed inside the API process (``jobs.api_executor``) and their liveness.
EXECUTOR_TAG = "librarian/executor"
API_EXECUTOR = "api"
QUEUE_EXECUTOR = "queue"  # a run worker (what a re-execution of an API run is)
PROCESS_TAG = "librarian/process"
# Set by the API's runner once execute_in_process has returned (or raised).
FINISHED_TAG = "librarian/finished"
# Where a run asked for at commit came from. The UI's "Launched by" column reads Dagster's
# ``user`` tag (sensor runs carry ``dagster/sensor_name`` instead).
UI_USER_TAG = "user"
REQUESTED_BY_TAG = "librarian/requested_by"
COMMIT_REQUEST = "upload commit"
# Dagster's tag on a re-executed run, naming the run it re-executes.
PARENT_RUN_TAG = "dagster/parent_run_id"

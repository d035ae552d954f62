"""The sections of ``librarian.toml`` (SPEC §3): one pydantic model each, strict and frozen.

``settings.LibrarianSettings`` puts them together and re-exports them; this module only
says what each key means and what values it takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from librarian_dagster.storage.checksums import ALGORITHMS, DEFAULT_ALGORITHM


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    public_url: str = ""
    # Bodies of JSON routes; streamed uploads set their own limit per route.
    max_json_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    # How long a verified password stays trusted in the API process (argon2 is slow on purpose).
    auth_cache_seconds: Annotated[float, Field(ge=0)] = 60.0
    # Wrong passwords per user name (and 4 times as many per client address) before each
    # further attempt waits (1 s, doubling, at most 300 s; answered 429 with Retry-After).
    login_failures_before_delay: Annotated[int, Field(ge=1)] = 5
    # An upload body that sends nothing for this long is cut off (408) and its thread freed.
    body_idle_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # ... and so is one slower than this on average, once twice that timeout has passed.
    min_body_bytes_per_second: Annotated[float, Field(ge=0)] = 1024.0
    # Upload bodies one user may stream at once (429 beyond), and all users together.
    max_uploads_per_user: Annotated[int, Field(ge=1)] = 8
    max_concurrent_uploads: Annotated[int, Field(ge=1)] = 64

    @model_validator(mode="after")
    def _default_public_url(self) -> ApiSettings:
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.host}:{self.port}")
        return self


class DagsterSettings(_Section):
    webserver_host: str = "127.0.0.1"
    webserver_port: Annotated[int, Field(ge=1, le=65535)] = 3000
    # PostgreSQL for Dagster's own storage (runs, events, schedules) via dagster-postgres;
    # empty means SQLite under DAGSTER_HOME.
    postgres_url: str = ""
    max_concurrent_runs: Annotated[int, Field(ge=1)] = 4
    # Where queued runs (not the API's commit-time runs) execute: "default" a process here,
    # "docker" a container on the local engine, "k8s" a Kubernetes Job. The last two need
    # `postgres_url`, an image with this librarian, and the stores at the same paths
    # wherever runs start (docs/deployment.md, "Beyond one machine").
    run_launcher: Literal["default", "docker", "k8s"] = "default"
    run_launcher_image: str = ""
    # docker: the network the run containers join (empty: Docker's default).
    run_launcher_network: str = ""
    # k8s: the Jobs' namespace, and the kubeconfig that reaches the cluster (empty: the
    # in-cluster service account, for a daemon that runs inside the cluster itself).
    run_launcher_namespace: str = "default"
    run_launcher_kubeconfig: str = ""
    # Environment variables each run takes from the daemon's environment, besides
    # LIBRARIAN_CONFIG and the Dagster storage URL (e.g. LIBRARIAN_DATABASE_URL).
    run_launcher_env: list[str] = []
    # Further keys of the launcher's own config, merged over the generated ones (docker:
    # `container_kwargs`, `registry`; k8s: `volumes`, `volume_mounts`, `env_secrets`, ...).
    run_launcher_config: dict[str, Any] = {}

    @model_validator(mode="after")
    def _launcher_needs_image(self) -> DagsterSettings:
        if self.run_launcher != "default" and not self.run_launcher_image:
            raise ValueError(f"run_launcher {self.run_launcher!r} needs run_launcher_image")
        if self.run_launcher != "default" and not self.postgres_url:
            raise ValueError(
                f"run_launcher {self.run_launcher!r} needs postgres_url: runs on other hosts "
                "cannot reach SQLite under DAGSTER_HOME"
            )
        return self


class RollingSettings(_Section):
    """A store that keeps only recent books (job ``rolling_cleanup``): a book older than
    ``keep_days`` (or the oldest, while the store holds more than ``max_bytes``) is deleted
    here once ``min_copies_elsewhere`` peers confirm, at that moment, that their copy
    verifies."""

    keep_days: Annotated[float, Field(ge=0)]
    min_copies_elsewhere: Annotated[int, Field(ge=1)] = 1
    max_bytes: Annotated[int, Field(ge=0)] | None = None
    # Books looked at per run (each may cost every peer a full re-read of it).
    max_books_per_run: Annotated[int, Field(ge=1)] = 100


class StoreSettings(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["local", "sneaker"] = "local"
    root: Path
    ingestable: bool = True
    enabled: bool = True
    # A drop folder on the store's filesystem: books appear at ``inbox_depth`` path segments
    # below it and count as finished when ``<book>.done`` appears beside them (the marker may
    # hold the producer's checksum) or, if ``inbox_quiet_seconds`` is set, when nothing in
    # them changed for that long.
    inbox: Path | None = None
    inbox_depth: Annotated[int, Field(ge=1, le=16)] = 1
    inbox_quiet_seconds: Annotated[float, Field(gt=0)] | None = None
    rolling: RollingSettings | None = None
    # Space kept free on the store's filesystem; staging refuses uploads that would eat into it.
    reserve_bytes: Annotated[int, Field(ge=0)] = 1024**3
    # Sneaker stores only (a removable drive at ``root``): a cap on what is written even when
    # the drive is larger, and the peer the drive is for (books it holds are not carried).
    capacity_bytes: Annotated[int, Field(gt=0)] | None = None
    destination: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    # A drive is used only while it is mounted at ``root``; false lets a plain directory
    # stand in for one (tests, a directory bind-mounted from the same file system).
    require_mount: bool = True

    @model_validator(mode="before")
    @classmethod
    def _sneaker_is_not_ingestable_by_default(cls, data: Any) -> Any:
        """A drive is filled by the librarian, never uploaded to: ``ingestable`` defaults off."""
        if isinstance(data, dict) and data.get("kind") == "sneaker" and "ingestable" not in data:
            return {**data, "ingestable": False}
        return data

    @model_validator(mode="after")
    def _keys_fit_the_kind(self) -> StoreSettings:
        if self.kind == "sneaker":
            wrong = [key for key in ("inbox", "rolling") if getattr(self, key) is not None]
            if self.ingestable:
                wrong.insert(0, "ingestable = true")
            if wrong:
                raise ValueError(
                    f"a sneaker store (a removable drive) cannot have {', '.join(wrong)}"
                )
        else:
            wrong = [key for key in ("capacity_bytes", "destination") if getattr(self, key)]
            wrong += ["require_mount"] if "require_mount" in self.model_fields_set else []
            if wrong:
                raise ValueError(f'{", ".join(wrong)}: only for stores of kind "sneaker"')
        return self


class TransferSettings(_Section):
    """How books are cloned to peers: batches, mover slots, retries, callbacks."""

    # A batch (one mover task) holds batch_min..batch_max books and at most batch_max_bytes;
    # a smaller one goes once its oldest book has waited batch_max_wait_seconds.
    batch_min: Annotated[int, Field(ge=1)] = 128
    batch_max: Annotated[int, Field(ge=1)] = 1024
    batch_max_bytes: Annotated[int, Field(ge=1)] = 50 * 1024**4
    batch_max_wait_seconds: Annotated[float, Field(ge=0)] = 600.0
    # Mover tasks in flight per mover (Globus allows 100 pending per user).
    max_active_transfers: Annotated[int, Field(ge=1, le=100)] = 90
    # Batches the clone sensor forms per peer and tick (the rest wait for the next tick), and
    # at most that many batches per peer wait for their peer or a mover slot.
    max_batches_per_tick: Annotated[int, Field(ge=1)] = 2
    # A book is looked at for cloning once it is this old: on PostgreSQL a transaction that
    # took a lower file id may commit after a higher one, and the high-water mark must not
    # pass a book that is not visible yet.
    catalogue_lag_seconds: Annotated[float, Field(ge=0)] = 30.0
    # The mover of a peer added without one: "globus" when [globus] is configured, else "local".
    default_mover: Literal["local", "globus"] | None = None
    # Sends of one book to one peer before it fails for good (an operator may retry it);
    # between them a back-off of retry_backoff_seconds, doubling up to the max.
    max_attempts: Annotated[int, Field(ge=1)] = 5
    retry_backoff_seconds: Annotated[float, Field(ge=0)] = 60.0
    retry_backoff_max_seconds: Annotated[float, Field(ge=0)] = 3600.0
    # Callbacks a peer did not take are retried after this, doubling up to the max, forever.
    callback_backoff_seconds: Annotated[float, Field(gt=0)] = 30.0
    callback_backoff_max_seconds: Annotated[float, Field(gt=0)] = 3600.0
    # How often each mover task is asked how it is doing (Globus allows 20 requests a second),
    # and how long the run that submitted a task waits for it to end (then the sensor polls).
    poll_interval_seconds: Annotated[float, Field(ge=0)] = 30.0
    settle_wait_seconds: Annotated[float, Field(ge=0)] = 15.0
    # A clone_batch run asked for but not seen working after this long is asked for again.
    relaunch_after_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Books one receive_clones run verifies and stores (clones arrive a batch at a time).
    max_books_per_receive_run: Annotated[int, Field(ge=1)] = 1024
    # A book sent but not confirmed after this long: ask the peer whether it holds it.
    stale_after_hours: Annotated[float, Field(gt=0)] = 24.0
    # A mover task that moved no byte for this long is cancelled and its books sent again
    # (each such try counts against max_attempts; the transfer's age is never reset). A
    # fill or drive-ingest run that logged nothing for this long is cancelled too.
    stuck_after_hours: Annotated[float, Field(gt=0)] = 6.0
    # Each call to a peer gives up after this long (and is retried later).
    peer_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0

    # A peer that has not answered for this long is an operator's business: one alert.
    peer_unreachable_alert_hours: Annotated[float, Field(gt=0)] = 6.0

    @model_validator(mode="after")
    def _ordered(self) -> TransferSettings:
        if self.batch_min > self.batch_max:
            raise ValueError("batch_min must not exceed batch_max")
        return self


class IngestSettings(_Section):
    """How staged books become ingest runs."""

    # One run verifies many books (a run costs a process); caps keep one huge book from
    # waiting behind many small ones.
    max_books_per_run: Annotated[int, Field(ge=1)] = 200
    max_bytes_per_run: Annotated[int, Field(ge=1)] = 64 * 1024**3
    # Staged transfers the sensor looks at per tick (the rest wait for the next tick).
    max_transfers_per_tick: Annotated[int, Field(ge=1)] = 2000
    # A requested run that has not claimed its books after this long is requested again.
    relaunch_after_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Launch the ingest run as soon as an upload is committed (the sensor stays the backstop).
    launch_on_commit: bool = True
    # Where those runs execute: "api" runs them one at a time inside the API process (no
    # queue wait, no worker process start: ~0.4 s of Dagster overhead instead of ~2 s);
    # "queue" submits them to Dagster's run queue like the sensor's runs.
    commit_runs: Literal["api", "queue"] = "api"
    # Largest single upload accepted (413 beyond); books are 10-20 GB, so 1 TiB is generous.
    max_upload_bytes: Annotated[int, Field(ge=1)] = 1024**4
    # An upload staged but sent no bytes for this long is failed and its staging removed;
    # until then its declared size stays reserved.
    stage_expiry_hours: Annotated[float, Field(gt=0)] = 24.0
    # What one user's uncommitted uploads may reserve at once (507 beyond): a share of the
    # ingestable stores' free space, and an absolute cap.
    max_reserved_fraction_per_user: Annotated[float, Field(gt=0, le=1)] = 0.5
    max_reserved_bytes_per_user: Annotated[int, Field(ge=1)] = 16 * 1024**4
    # Entries (files and directories) one directory book may hold, and the declared bytes
    # each entry beyond the first 1,000 needs: a "0-byte" tar of 20,000 empty directories
    # is refused instead of writing their metadata.
    max_entries_per_book: Annotated[int, Field(ge=1)] = 1_000_000
    min_bytes_per_entry: Annotated[int, Field(ge=0)] = 512


class GlobusSettings(_Section):
    """This site's Globus collection and the client credentials that submit transfers.

    A local path ``P`` under ``local_root`` is ``path_prefix`` + ``P`` relative to
    ``local_root`` in the collection (both "/" by default: the collection shows the host's
    own paths).
    """

    client_id: str
    client_secret_env: str = "GLOBUS_CLIENT_SECRET"
    collection_id: str
    path_prefix: str = "/"
    local_root: Path = Path("/")
    # Globus's sync level for re-sent books (None: always copy); checksums are always verified.
    sync_level: Literal["exists", "size", "mtime", "checksum"] | None = None


class ChecksumSettings(_Section):
    algorithm: str = DEFAULT_ALGORITHM

    @field_validator("algorithm")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; use one of {', '.join(ALGORITHMS)}")
        return value


class IntegritySettings(_Section):
    """The scheduled re-verification of stored copies (job ``verify_integrity``)."""

    # Every copy in service is re-read within this many days (due at 80 % of it).
    period_days: Annotated[float, Field(gt=0)] = 30.0
    # A pass finding more than this share of the copies it read on one store newly bad
    # guards the store: no automatic repair or deletion there until an operator says so.
    max_bad_fraction: Annotated[float, Field(ge=0, le=1)] = 0.01
    # ... and at least this many of them: one bad copy is never a burst.
    burst_min_bad: Annotated[int, Field(ge=1)] = 2
    # One pass (hourly, at minute 23) reads at most this much, oldest-verified first.
    max_bytes_per_run: Annotated[int, Field(ge=1)] = 2 * 1024**4
    max_seconds_per_run: Annotated[float, Field(gt=0)] = 3300.0
    max_books_per_run: Annotated[int, Field(ge=1)] = 1_000_000


class NotifySettings(_Section):
    slack_token_env: str = "SLACK_BOT_TOKEN"
    slack_channel: str = "#librarian-alerts"
    # A cause still open this long after its last message is posted again, with its count.
    remind_hours: Annotated[float, Field(gt=0)] = 24.0


class SecuritySettings(_Section):
    """Argon2id parameters; changing them rehashes each password at its owner's next login."""

    argon2_time_cost: Annotated[int, Field(ge=1)] = 3
    argon2_memory_cost_kib: Annotated[int, Field(ge=8)] = 64 * 1024
    argon2_parallelism: Annotated[int, Field(ge=1)] = 4

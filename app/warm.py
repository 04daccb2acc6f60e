"""The warm job: poll Last.fm, merge with what was known, publish one snapshot.

This is the only code path that writes the cache (through app.publisher) and
the members database's tracks. One run: lock, lease, fetch, merge, publish,
one summary line, an exit code systemd understands (docs/design.md, Publish).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import requests
import requests.adapters

from app import cache
from app import members
from app import publisher
from app import schedule
from app.lastfm import LastfmClient
from app.lastfm import LastfmError
from app.lastfm import LastfmFatalError
from app.lastfm import LastfmPermanentError
from app.lastfm import LastfmTransientError
from app.settings import Settings
from app.settings import SettingsError
from app.settings import load_settings
from app.snapshot import Snapshot
from app.snapshot import Track
from app.snapshot import generation_from
from app.snapshot import sort_tracks
from app.throttle import RateLimiter

logger = logging.getLogger(__name__)

# The generation of the run in progress, stamped on every log line by
# GenerationFilter (threads fetching for the run copy the context).
current_generation: contextvars.ContextVar[str] = contextvars.ContextVar("generation", default="-")

EXIT_OK = 0  # published, superseded, or another run in progress
EXIT_FAILED = 1  # nothing new published (at most the last known data restored)
EXIT_CONFIG = 2  # bad configuration: settings, database path, Last.fm key

# The lease outlives the deadline by this much, as a safety if a run dies
# without releasing it.
LEASE_MARGIN_S = 60


@dataclasses.dataclass
class RunResult:
    """What a run did: its outcome, counts and exit code."""

    outcome: str
    exit_code: int
    generation: int
    members: int = 0
    fetched: int = 0
    carried: int = 0
    dropped: int = 0
    failed: int = 0
    deferred: int = 0
    tracks: int = 0
    duration_s: float = 0.0
    error: str = ""

    def summary(self) -> str:
        """Return the run's one summary line of key=value pairs."""
        line = (
            f"warm outcome={self.outcome} generation={self.generation} members={self.members}"
            f" fetched={self.fetched} carried={self.carried} dropped={self.dropped} failed={self.failed}"
            f" deferred={self.deferred}"
            f" tracks={self.tracks} duration_s={self.duration_s:.3f} exit={self.exit_code}"
        )
        if self.error:
            line += f' error="{self.error}"'
        return line


@dataclasses.dataclass(frozen=True)
class Merged:
    """The tracks a run will publish and how each member fared."""

    tracks: list[Track]
    fetched: int
    carried: int
    dropped: int
    failed: int
    deferred: int
    last_updated: datetime | None


# What a member's fetch returned: a Track, NO_SCROBBLES, or a LastfmError.
NO_SCROBBLES = "no-scrobbles"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalLock:
    """An exclusive, non-blocking flock on a file; the kernel drops it if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = None

    def acquire(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            raise SettingsError(
                f"cannot open the lock file {str(self.path)!r}: {error.strerror}; check LISTENS_LOCK_FILE"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def merge(
    public_members: list[members.Member],
    results: Mapping[int, object],
    *,
    started: datetime,
    fresh_s: int,
    max_stale_s: int,
) -> Merged:
    """Merge a run's fetch results with each member's last known track.

    A transient failure, or a member this run did not poll (no entry in
    results: deferred by the schedule), keeps the member's last known track
    while it is younger than max_stale_s; a permanent failure ("user not
    found", private) drops the member at once. A carried "now playing" older
    than the freshness window is shown as played when it was last seen.
    """
    tracks: list[Track] = []
    fetched = carried = dropped = failed = deferred = 0
    newest: datetime | None = None
    for member in public_members:
        result = results.get(member.id)
        if isinstance(result, Track) or result == NO_SCROBBLES:
            fetched += 1
            if isinstance(result, Track):
                tracks.append(result)
                newest = max(newest, result.fetched_at) if newest else result.fetched_at
            continue
        if isinstance(result, LastfmPermanentError):
            dropped += 1
            continue
        if result is None:
            deferred += 1
        else:
            failed += 1
        last = member.last_track
        if last is None or (started - last.fetched_at).total_seconds() > max_stale_s:
            continue
        carried += 1
        if last.now_playing and (started - last.fetched_at).total_seconds() > fresh_s:
            last = dataclasses.replace(last, now_playing=False, played_at=last.fetched_at)
        tracks.append(dataclasses.replace(last, username=member.username, lastfm_username=member.lastfm_username))
    return Merged(sort_tracks(tracks), fetched, carried, dropped, failed, deferred, newest)


def fetch_all(
    client: LastfmClient,
    public_members: list[members.Member],
    *,
    concurrency: int,
    deadline: float,
    clock: Callable[[], float],
    wallclock: Callable[[], datetime],
) -> dict[int, object]:
    """Fetch every member's recent track with bounded concurrency, by the deadline.

    Return member id -> Track, NO_SCROBBLES or the LastfmError raised. A
    member not fetched by the deadline gets a transient error. Raise
    LastfmFatalError at once when Last.fm rejects the API key.
    """
    abort = threading.Event()

    def fetch(member: members.Member) -> object:
        if abort.is_set():
            raise LastfmFatalError("run aborted")
        try:
            track = client.fetch_recent_track(
                member.username, member.lastfm_username, now=wallclock(), deadline=deadline
            )
        except LastfmFatalError:
            abort.set()
            raise
        except LastfmError as error:
            return error
        return NO_SCROBBLES if track is None else track

    results: dict[int, object] = {}
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lastfm")
    try:
        futures = {executor.submit(contextvars.copy_context().run, fetch, member): member for member in public_members}
        done, _ = concurrent.futures.wait(futures, timeout=max(0.0, deadline - clock()) + 1.0)
        for future in done:
            error = future.exception()
            if error is not None:
                # Fatal key errors end the run; anything else is a bug, and a
                # bug must fail the run, never pass for "nobody is listening".
                raise error
            results[futures[future].id] = future.result()
        for member in futures.values():
            if member.id not in results:
                results[member.id] = _deadline_error(member)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return results


def _deadline_error(member: members.Member) -> LastfmError:
    return LastfmTransientError(f"{member.lastfm_username}: not fetched before the run's deadline")


def make_lastfm_client(settings: Settings, clock: Callable[[], float]) -> LastfmClient:
    """Build the Last.fm client of a run: pooled session, rate limit, timeouts."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=settings.concurrency)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    throttle = RateLimiter(settings.rate, clock=clock) if settings.rate > 0 else None
    return LastfmClient(session, settings.lastfm_url, settings.lastfm_api_key, throttle=throttle, clock=clock)


def run(
    settings: Settings,
    *,
    now: datetime | None = None,
    checkpoint: publisher.Checkpoint = publisher._no_checkpoint,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """Run one warm cycle and return its result; log exactly one INFO summary line.

    now fixes the run's start (and every fetch time) for tests; checkpoint is
    called after each step ("fetched", then the publisher's steps).
    """
    started = now if now is not None else _utc_now()
    wallclock = (lambda: now) if now is not None else _utc_now
    result = RunResult("failed", EXIT_FAILED, generation_from(started))
    token = current_generation.set(str(result.generation))
    try:
        return _run(settings, result, started, wallclock, checkpoint, clock)
    finally:
        current_generation.reset(token)


def _run(settings, result, started, wallclock, checkpoint, clock) -> RunResult:
    start_clock = clock()
    lock = LocalLock(settings.lock_path)
    try:
        if not lock.acquire():
            result.outcome, result.exit_code = "locked", EXIT_OK
            logger.info("another warm run holds %s; not starting", settings.lock_path)
        else:
            try:
                _run_locked(settings, result, started, wallclock, checkpoint, clock, start_clock)
            finally:
                lock.release()
    except (SettingsError, members.DatabaseError) as error:
        result.outcome, result.exit_code, result.error = "config", EXIT_CONFIG, str(error)
        logger.error("%s", error)
    except Exception as error:
        # A bug: fail loudly (exit 1, traceback in the journal), publish nothing.
        result.outcome, result.exit_code, result.error = "error", EXIT_FAILED, type(error).__name__
        logger.exception("warm run failed unexpectedly")
    result.duration_s = clock() - start_clock
    logger.info("%s", result.summary())
    return result


def _run_locked(settings, result, started, wallclock, checkpoint, clock, start_clock) -> None:
    connection = members.connect(settings.database)
    owner = f"{socket.gethostname()}:{settings.lock_path.resolve()}"
    try:
        client = cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
        try:
            leased = publisher.acquire_lease(
                client, settings.key_prefix, result.generation, owner, int(settings.deadline_s) + LEASE_MARGIN_S
            )
        except publisher.PublishError as error:
            # Fetching still refreshes the database; the publish will fail
            # (exit 1) unless memcached is back by then.
            logger.warning("no lease: %s", error)
            leased = None
        if leased is False:
            result.outcome, result.exit_code = "leased", EXIT_OK
            logger.info("another host's warm run holds the lease; not starting")
            return
        try:
            _fetch_and_publish(settings, connection, client, result, started, wallclock, checkpoint, clock, start_clock)
        finally:
            if leased:
                publisher.release_lease(client, settings.key_prefix, result.generation, owner)
        members.record_run(connection, result.generation, wallclock(), result.exit_code, result.summary())
    finally:
        connection.close()


def _fetch_and_publish(
    settings, connection, client, result, started, wallclock, checkpoint, clock, start_clock
) -> None:
    public_members = members.list_members(connection, public_only=True)
    result.members = len(public_members)
    deadline = start_clock + settings.deadline_s
    # Past Last.fm's budget, poll by priority; the rest keep their last known track.
    polled, _ = schedule.select_for_run(
        public_members, started, schedule.run_budget(settings.rate, settings.deadline_s)
    )
    lastfm = make_lastfm_client(settings, clock)
    try:
        results = fetch_all(
            lastfm, polled, concurrency=settings.concurrency, deadline=deadline, clock=clock, wallclock=wallclock
        )
    except LastfmFatalError as error:
        result.outcome, result.exit_code, result.error = "config", EXIT_CONFIG, str(error)
        logger.error("Last.fm rejected the API key: %s; check LASTFM_API_KEY", error)
        return
    checkpoint("fetched")
    members.record_outcomes(connection, _outcomes(results, wallclock(), settings.max_poll_interval_s))
    merged = merge(public_members, results, started=started, fresh_s=settings.fresh_s, max_stale_s=settings.max_stale_s)
    result.fetched, result.carried, result.dropped = merged.fetched, merged.carried, merged.dropped
    result.failed, result.deferred = merged.failed, merged.deferred
    answered = merged.fetched + merged.dropped
    tracks = merged.tracks[: settings.snapshot_items]
    result.tracks = len(tracks)
    if polled and answered == 0:
        _restore_if_missing(settings, client, result, tracks, checkpoint, clock, start_clock)
        return
    last_updated = merged.last_updated or started
    _note_pointer_behind(settings, connection, client)
    _publish(settings, client, result, tracks, last_updated, checkpoint, clock, start_clock)


def _outcomes(results: Mapping[int, object], now: datetime, ceiling_s: int) -> list[members.FetchOutcome]:
    """Turn fetch results into database changes, each with the member's next poll time."""
    outcomes = []
    later = now + timedelta(seconds=ceiling_s)
    for member_id, value in results.items():
        if isinstance(value, Track):
            outcomes.append(members.FetchOutcome(member_id, "ok", value, schedule.next_poll_at(value, now, ceiling_s)))
        elif value == NO_SCROBBLES:
            outcomes.append(members.FetchOutcome(member_id, "ok", None, later))
        elif isinstance(value, LastfmPermanentError):
            outcomes.append(members.FetchOutcome(member_id, value.reason, None, later))
        else:
            # A transient failure: try again next cycle.
            outcomes.append(members.FetchOutcome(member_id, "failed", None, now))
    return outcomes


def _restore_if_missing(settings, client, result, tracks, checkpoint, clock, start_clock) -> None:
    """Publish, step 3 (docs/design.md): Last.fm failed for everyone; republish only what a cache loss erased."""
    result.error = "no member could be fetched from Last.fm"
    try:
        current = publisher.read_published(client, settings.key_prefix)
    except publisher.PublishError as error:
        result.error += f"; {error}"
        logger.error("%s", result.error)
        return
    if current is not None or not tracks:
        logger.error("%s; the current snapshot stays as it is", result.error)
        return
    last_updated = max(track.fetched_at for track in tracks)
    _publish(settings, client, result, tracks, last_updated, checkpoint, clock, start_clock)
    if result.exit_code == EXIT_OK:
        result.outcome = "restored"
        logger.error("%s; the snapshot was missing, so the last known tracks were republished", result.error)
    result.exit_code = EXIT_FAILED


def _publish(settings, client, result, tracks, last_updated, checkpoint, clock, start_clock) -> None:
    snapshot = Snapshot(
        generation=result.generation,
        last_updated=last_updated,
        tracks=tuple(tracks),
        stats={
            "members": result.members,
            "fetched": result.fetched,
            "carried": result.carried,
            "dropped": result.dropped,
            "failed": result.failed,
            "fetchSeconds": round(clock() - start_clock, 3),
        },
    )
    try:
        outcome = publisher.publish_snapshot(
            client, settings.key_prefix, snapshot, expiry_s=settings.max_stale_s, checkpoint=checkpoint
        )
    except publisher.PublishError as error:
        result.outcome, result.exit_code, result.error = "failed", EXIT_FAILED, str(error)
        logger.error("publish failed: %s", error)
        return
    result.outcome, result.exit_code = outcome.value, EXIT_OK


def _note_pointer_behind(settings, connection, client) -> None:
    """Log a pointer older than this job's last publish: the publish that follows moves it forward as usual.

    A memcached server that rejoins a pool with old data (cut off, not
    restarted) holds an old pointer; web workers keep showing the newer
    snapshot they have (docs/design.md, Read) until this run replaces it.
    """
    known = members.last_published_generation(connection)
    current = publisher.pointer_generation(client, settings.key_prefix)
    if known is not None and current is not None and current < known:
        logger.warning(
            "pointer at generation %s is older than generation %s this job published last"
            " (a memcached server rejoined with old data?); moving it forward",
            current,
            known,
        )


class GenerationFilter(logging.Filter):
    """Add the current run's generation to every log record as `generation`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.generation = current_generation.get()
        return True


def configure_logging() -> None:
    """Log one key=value line per event to stderr (journald), each with the run's generation."""
    handler = logging.StreamHandler()
    handler.addFilter(GenerationFilter())
    handler.setFormatter(logging.Formatter("level=%(levelname)s logger=%(name)s generation=%(generation)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # urllib3 logs request lines, query string (and so the API key) included, at DEBUG.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(environ: Mapping[str, str] | None = None) -> int:
    """Load the settings, run one warm cycle, and return the exit code for systemd."""
    try:
        settings = load_settings(environ)
        settings.require_lastfm_key()
    except SettingsError as error:
        logger.error("%s", error)
        return EXIT_CONFIG
    return run(settings).exit_code

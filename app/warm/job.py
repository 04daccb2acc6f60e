"""The warm job: poll Last.fm, merge with what was known, publish one snapshot.

This is the only code path that writes the cache (through app.publisher) and
the members database's tracks. One run: lock, lease, fetch, merge, publish,
one summary line, an exit code systemd understands (docs/design.md, Publish).
"""

from __future__ import annotations

import contextvars
import dataclasses
import fcntl
import logging
import os
import queue
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

from app.core import cache
from app.core import logs
from app.core.exits import EXIT_CONFIG
from app.core.exits import EXIT_FAILED
from app.core.exits import EXIT_OK
from app.core.settings import Settings
from app.core.settings import SettingsError
from app.core.settings import load_settings
from app.core.snapshot import Snapshot
from app.core.snapshot import Track
from app.core.snapshot import generation_from
from app.core.snapshot import sort_tracks
from app.warm import members
from app.warm import metrics as warm_metrics
from app.warm import publisher
from app.warm import schedule
from app.warm.lastfm import LastfmAdapter
from app.warm.lastfm import LastfmClient
from app.warm.lastfm import LastfmError
from app.warm.lastfm import LastfmFatalError
from app.warm.lastfm import LastfmPermanentError
from app.warm.lastfm import LastfmTransientError
from app.warm.throttle import RateLimiter

# Named as in every log line (logger=app.warm), whatever the module's place in the package.
logger = logging.getLogger("app.warm")

# The generation of the run in progress, stamped on every log line by
# GenerationFilter (threads fetching for the run copy the context).
current_generation: contextvars.ContextVar[str] = contextvars.ContextVar("generation", default="-")

# The lease outlives the deadline by this much, as a safety if a run dies
# without releasing it.
LEASE_MARGIN_S = 60

# How long past the deadline the run waits for fetches already under way
# (each ends by then: the client stops reading at the deadline).
FETCH_GRACE_S = 1.0


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
    # Why the members database could not be written ("busy", "full", "readonly", "error"); "" when it was.
    db: str = ""

    def summary(self) -> str:
        """Return the run's one summary line of key=value pairs."""
        line = (
            f"warm outcome={self.outcome}{f' db={self.db}' if self.db else ''}"
            f" generation={self.generation} members={self.members}"
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

    # Daemon threads, not a ThreadPoolExecutor: the interpreter joins an
    # executor's threads at exit, so one request Last.fm never finishes
    # would hold the process past the deadline. Left-behind threads are
    # abandoned; the process exits without them.
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for member in public_members:
        pending.put(member)
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    changed = threading.Condition()

    def work() -> None:
        while not abort.is_set():
            try:
                member = pending.get_nowait()
            except queue.Empty:
                return
            try:
                value = fetch(member)
            except BaseException as error:  # noqa: BLE001 - handed to the run's thread below
                with changed:
                    errors.append(error)
                    abort.set()
                    changed.notify_all()
                return
            with changed:
                results[member.id] = value
                changed.notify_all()

    for index in range(min(concurrency, len(public_members))):
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(work,), name=f"lastfm-{index}", daemon=True).start()
    give_up = time.monotonic() + max(0.0, deadline - clock()) + FETCH_GRACE_S
    with changed:
        while len(results) < len(public_members) and not errors:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            changed.wait(remaining)
        abort.set()
        if errors:
            # Fatal key errors end the run at once, abandoning requests in
            # flight; anything else is a bug, and a bug must fail the run,
            # never pass for "nobody is listening".
            raise errors[0]
        finished = dict(results)
    for member in public_members:
        if member.id not in finished:
            finished[member.id] = _deadline_error(member)
    return finished


def _deadline_error(member: members.Member) -> LastfmError:
    return LastfmTransientError(f"{member.lastfm_username}: not fetched before the run's deadline")


def make_lastfm_client(settings: Settings, clock: Callable[[], float]) -> LastfmClient:
    """Build the Last.fm client of a run: pooled session, rate limit, timeouts."""
    session = requests.Session()
    adapter = LastfmAdapter(pool_connections=1, pool_maxsize=settings.concurrency)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    throttle = RateLimiter(settings.rate, clock=clock) if settings.rate > 0 else None
    return LastfmClient(session, settings.lastfm_url, settings.lastfm_api_key, throttle=throttle, clock=clock)


def run(
    settings: Settings,
    *,
    now: datetime | None = None,
    checkpoint: publisher.Checkpoint = publisher.no_checkpoint,
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
    except members.DatabaseError as error:
        if error.kind in ("busy", "full", "unavailable"):
            # Somebody else's lock passes, a disk gets freed: neither is a configuration error.
            result.outcome, result.exit_code, result.db = "failed", EXIT_FAILED, error.kind
        else:
            result.outcome, result.exit_code, result.db = "config", EXIT_CONFIG, error.kind
        result.error = str(error)
        logger.error("%s", error)
    except SettingsError as error:
        result.outcome, result.exit_code, result.error = "config", EXIT_CONFIG, str(error)
        logger.error("%s", error)
    except Exception as error:
        # A bug: fail loudly (exit 1, traceback in the journal), publish nothing.
        result.outcome, result.exit_code, result.error = "error", EXIT_FAILED, type(error).__name__
        logger.exception("warm run failed unexpectedly")
    if not result.duration_s:
        # A run recorded in the database already has its duration (the stored summary's).
        result.duration_s = clock() - start_clock
    logger.info("%s", result.summary())
    warm_metrics.write_run_metrics(settings.metrics_file, result)
    return result


def _run_locked(settings, result, started, wallclock, checkpoint, clock, start_clock) -> None:
    connection = members.connect(settings.database, busy_timeout_s=settings.db_busy_s)
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
        if result.db and result.exit_code == EXIT_OK:
            # Published, yet the database missed this run's changes: the alert says so.
            result.exit_code = EXIT_FAILED
        result.duration_s = clock() - start_clock
        _write_database(
            settings,
            result,
            "the run's summary",
            lambda: members.record_run(connection, result.generation, wallclock(), result.exit_code, result.summary()),
        )
        if result.db and result.exit_code == EXIT_OK:
            result.exit_code = EXIT_FAILED
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
    accounts = {member.id: member.lastfm_username for member in polled}
    outcomes = _outcomes(results, wallclock(), settings.max_poll_interval_s, accounts)
    # A busy or full database loses the database's copy only: the run still
    # publishes what it fetched, from memory, and the next run stores it.
    _write_database(settings, result, "the fetched tracks", lambda: members.record_outcomes(connection, outcomes))
    # A member removed, made private or linked to another account while the
    # run was fetching wins over what the run fetched for them.
    public_members = _current_members(connection, public_members)
    results = _for_linked_accounts(results, accounts, public_members)
    result.members = len(public_members)
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
    _publish_for_members(connection, settings, client, result, tracks, last_updated, checkpoint, clock, start_clock)


def _write_database(settings: Settings, result: RunResult, what: str, write: Callable[[], None]) -> None:
    """Run write; when the database refuses it, name why in result.db and log one line, never raise."""
    try:
        write()
    except members.ERRORS as error:
        kind, message = members.describe_failure(error, settings.database, settings.db_busy_s)
        if kind == "unavailable":
            # The shared database is gone (and its guard with it): publish nothing, exit 1.
            raise members.DatabaseError(message, kind=kind) from None
        result.db = result.db or kind
        logger.error("could not store %s: %s", what, message)


def _current_members(connection, read_before: list[members.Member]) -> list[members.Member]:
    """Return the public members as they are now; the list read before, if the database cannot say."""
    try:
        return members.list_members(connection, public_only=True)
    except members.ERRORS as error:
        logger.warning("could not read the members again (%s); using the list read at the start", error)
        return read_before


def _for_linked_accounts(
    results: Mapping[int, object], accounts: Mapping[int, str], current: list[members.Member]
) -> dict[int, object]:
    """Keep the results of members still public and linked to the Last.fm account that was fetched."""
    linked = {member.id: member.lastfm_username.casefold() for member in current}
    return {
        member_id: value
        for member_id, value in results.items()
        if linked.get(member_id) == accounts.get(member_id, "").casefold()
    }


def _still_linked(tracks: list[Track], current: list[members.Member]) -> list[Track]:
    """Return the tracks whose member is still public and linked to the account the track came from."""
    linked = {member.username.casefold(): member.lastfm_username.casefold() for member in current}
    return [track for track in tracks if linked.get(track.username.casefold()) == track.lastfm_username.casefold()]


def _linked_now(connection, tracks: list[Track]) -> list[Track]:
    """Return the tracks still linked to their member as the database says now; all of them if it cannot say."""
    try:
        return _still_linked(tracks, members.list_members(connection, public_only=True))
    except members.ERRORS as error:
        logger.warning("could not check the members again: %s", error)
        return tracks


class _MembersChangedError(Exception):
    """Raised inside a publish, before the pointer moves, when a member of the snapshot changed meanwhile."""


def _publish_for_members(
    connection, settings, client, result, tracks, last_updated, checkpoint, clock, start_clock
) -> None:
    """Publish tracks; if a member is removed, made private or relinked meanwhile, publish without them.

    The snapshot is built before the publish. A change seen just before the
    pointer moves stops that publish (the snapshot stays unnamed and
    expires); a change after the pointer moved is corrected at once by a
    second publish, one generation later, rather than by the next run.
    """

    def guarded(step: str) -> None:
        checkpoint(step)
        if step == "pointer-read" and len(_linked_now(connection, tracks)) != len(tracks):
            raise _MembersChangedError

    try:
        _publish(settings, client, result, tracks, last_updated, guarded, clock, start_clock)
    except _MembersChangedError:
        pass
    else:
        if result.exit_code != EXIT_OK or result.outcome != publisher.PublishOutcome.PUBLISHED.value:
            return
    kept = _linked_now(connection, tracks)
    if len(kept) == len(tracks):
        return
    logger.warning(
        "%d member(s) removed, made private or relinked while publishing; publishing again without them",
        len(tracks) - len(kept),
    )
    result.tracks = len(kept)
    _publish(settings, client, result, kept, last_updated, publisher.no_checkpoint, clock, start_clock, 1)


def _outcomes(
    results: Mapping[int, object], now: datetime, ceiling_s: int, accounts: Mapping[int, str] | None = None
) -> list[members.FetchOutcome]:
    """Turn fetch results into database changes, each with the member's next poll time.

    accounts maps member ids to the Last.fm account fetched, so a result is
    stored only while the member is still linked to it.
    """
    outcomes = []
    later = now + timedelta(seconds=ceiling_s)
    for member_id, value in results.items():
        account = accounts.get(member_id) if accounts is not None else None
        if isinstance(value, Track):
            next_poll = schedule.next_poll_at(value, now, ceiling_s)
            outcomes.append(members.FetchOutcome(member_id, "ok", value, next_poll, account))
        elif value == NO_SCROBBLES:
            outcomes.append(members.FetchOutcome(member_id, "ok", None, later, account))
        elif isinstance(value, LastfmPermanentError):
            outcomes.append(members.FetchOutcome(member_id, value.reason, None, later, account))
        else:
            # A transient failure: try again next cycle.
            outcomes.append(members.FetchOutcome(member_id, "failed", None, now, account))
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


def _publish(settings, client, result, tracks, last_updated, checkpoint, clock, start_clock, offset=0) -> None:
    """Publish tracks as the run's generation (plus offset, for a corrected second publish)."""
    snapshot = Snapshot(
        generation=result.generation + offset,
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
    """Log one key=value line per event to stderr (journald), each with the run's generation.

    Under systemd each line starts with its priority (app.logs), so
    journalctl -p warning shows a failed run.
    """
    handler = logs.JournalHandler()
    handler.addFilter(GenerationFilter())
    handler.setFormatter(
        logs.OneLineFormatter("level=%(levelname)s logger=%(name)s generation=%(generation)s %(message)s")
    )
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
        return error.exit_code
    return run(settings).exit_code


def console_main() -> int:
    """The installed `listens-warm` command (and scripts/warm_listens.py): one run, logged, its exit code."""
    configure_logging()
    return main()

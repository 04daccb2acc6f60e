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
import sqlite3
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from datetime import datetime
from datetime import timedelta
from enum import StrEnum
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
from app.core.snapshot import utc_now
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
from app.warm.members import FetchStatus
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


class Outcome(StrEnum):
    """How a run ended, as its summary line and metrics name it, with the exit code it carries.

    docs/design.md, Exit codes, is the table. A str, so an outcome compares
    equal to its name ("published") and prints as it.
    """

    exit_code: int

    def __new__(cls, value: str, exit_code: int) -> Outcome:
        member = str.__new__(cls, value)
        member._value_ = value
        member.exit_code = exit_code
        return member

    PUBLISHED = "published", EXIT_OK
    SUPERSEDED = "superseded", EXIT_OK
    LOCKED = "locked", EXIT_OK
    LEASED = "leased", EXIT_OK
    FAILED = "failed", EXIT_FAILED
    RESTORED = "restored", EXIT_FAILED
    CONFIG = "config", EXIT_CONFIG
    ERROR = "error", EXIT_FAILED


@dataclasses.dataclass
class RunResult:
    """What a run did: its outcome, counts and exit code."""

    outcome: Outcome
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

    def end(self, outcome: Outcome, *, error: str | None = None, db: str | None = None) -> None:
        """Set the run's outcome and the exit code it carries; error and db, when given, say why."""
        self.outcome = outcome
        self.exit_code = outcome.exit_code
        if error is not None:
            self.error = error
        if db is not None:
            self.db = db

    def fail_if_database_missed(self) -> None:
        """Turn an exit 0 into 1 when the database missed this run's changes (db set): the alert says so."""
        if self.db and self.exit_code == EXIT_OK:
            self.exit_code = EXIT_FAILED


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


@dataclasses.dataclass(frozen=True)
class NoScrobbles:
    """What a member's fetch returned when Last.fm answered with no track: the account never scrobbled."""


NO_SCROBBLES = NoScrobbles()

# What a member's fetch returned: a Track, NO_SCROBBLES, or the LastfmError raised.
FetchResult = Track | NoScrobbles | LastfmError


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
    results: Mapping[int, FetchResult],
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
        if isinstance(result, (Track, NoScrobbles)):
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
) -> dict[int, FetchResult]:
    """Fetch every member's recent track with bounded concurrency, by the deadline.

    Return member id -> Track, NO_SCROBBLES or the LastfmError raised. A
    member not fetched by the deadline gets a transient error. Raise
    LastfmFatalError at once when Last.fm rejects the API key.
    """
    abort = threading.Event()

    def fetch(member: members.Member) -> FetchResult:
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
    results: dict[int, FetchResult] = {}
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
    started = now if now is not None else utc_now()
    wallclock = (lambda: now) if now is not None else utc_now
    result = RunResult(Outcome.FAILED, Outcome.FAILED.exit_code, generation_from(started))
    token = current_generation.set(str(result.generation))
    try:
        return WarmRun(settings, result, started=started, wallclock=wallclock, checkpoint=checkpoint, clock=clock).run()
    finally:
        current_generation.reset(token)


class _MembersChangedError(Exception):
    """Raised inside a publish, before the pointer moves, when a member of the snapshot changed meanwhile."""


class WarmRun:
    """One warm cycle (docs/design.md, Publish): lock, lease, fetch, merge, publish, summary.

    It holds what the steps share: the settings, the clients (members
    database, memcached, Last.fm; each opened by the step that first needs
    it), the generation, the local lock, and the result whose outcome and
    counts the summary line reports. One object per run; never reused.
    """

    def __init__(
        self,
        settings: Settings,
        result: RunResult,
        *,
        started: datetime,
        wallclock: Callable[[], datetime],
        checkpoint: publisher.Checkpoint,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.result = result
        self.started = started
        self.wallclock = wallclock
        self.checkpoint = checkpoint
        self.clock = clock
        self.start_clock = clock()
        self.local_lock = LocalLock(settings.lock_path)
        self.connection: sqlite3.Connection | None = None
        self.client: cache.RawClient | None = None
        self.lastfm: LastfmClient | None = None
        # Who holds the lease: this host and its lock file.
        self.owner = ""

    @property
    def generation(self) -> int:
        return self.result.generation

    def run(self) -> RunResult:
        """Run the cycle under the local lock, turn every error into an outcome, and end with the summary."""
        result = self.result
        try:
            if not self.lock():
                result.end(Outcome.LOCKED)
                logger.info("another warm run holds %s; not starting", self.settings.lock_path)
            else:
                try:
                    self._run_locked()
                finally:
                    self.local_lock.release()
        except members.DatabaseError as error:
            if error.kind in ("busy", "full", "unavailable"):
                # Somebody else's lock passes, a disk gets freed: neither is a configuration error.
                result.end(Outcome.FAILED, error=str(error), db=error.kind)
            else:
                result.end(Outcome.CONFIG, error=str(error), db=error.kind)
            logger.error("%s", error)
        except SettingsError as error:
            result.end(Outcome.CONFIG, error=str(error))
            logger.error("%s", error)
        except Exception as error:
            # A bug: fail loudly (exit 1, traceback in the journal), publish nothing.
            result.end(Outcome.ERROR, error=type(error).__name__)
            logger.exception("warm run failed unexpectedly")
        self.summary()
        return result

    def lock(self) -> bool:
        """Publish, step 1: take this host's lock; False when another run holds it."""
        return self.local_lock.acquire()

    def lease(self) -> bool | None:
        """Publish, step 1: take the lease in memcached; False when another host's run holds it.

        None when memcached cannot say: fetching still refreshes the database,
        and the publish fails (exit 1) unless memcached is back by then.
        """
        try:
            return publisher.acquire_lease(
                self.client,
                self.settings.key_prefix,
                self.generation,
                self.owner,
                int(self.settings.deadline_s) + LEASE_MARGIN_S,
            )
        except publisher.PublishError as error:
            logger.warning("no lease: %s", error)
            return None

    def _run_locked(self) -> None:
        """Open the members database and memcached, take the lease, work, and record the run's summary."""
        settings, result = self.settings, self.result
        self.connection = members.connect(settings.database, busy_timeout_s=settings.db_busy_s)
        self.owner = f"{socket.gethostname()}:{settings.lock_path.resolve()}"
        try:
            self.client = cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
            leased = self.lease()
            if leased is False:
                result.end(Outcome.LEASED)
                logger.info("another host's warm run holds the lease; not starting")
                return
            try:
                self._fetch_and_publish()
            finally:
                if leased:
                    publisher.release_lease(self.client, settings.key_prefix, self.generation, self.owner)
            # Published, yet the database missed this run's changes: the alert says so.
            result.fail_if_database_missed()
            result.duration_s = self.clock() - self.start_clock
            connection = self.connection
            self._write_database(
                "the run's summary",
                lambda: members.record_run(
                    connection, result.generation, self.wallclock(), result.exit_code, result.summary()
                ),
            )
            result.fail_if_database_missed()
        finally:
            self.connection.close()

    def _fetch_and_publish(self) -> None:
        """Publish, steps 2-6: fetch, store, merge, then publish (or only restore, when nobody answered)."""
        settings, result, connection = self.settings, self.result, self.connection
        public_members = members.list_members(connection, public_only=True)
        result.members = len(public_members)
        # Past Last.fm's budget, poll by priority; the rest keep their last known track.
        polled, _ = schedule.select_for_run(
            public_members, self.started, schedule.run_budget(settings.rate, settings.deadline_s)
        )
        results = self.fetch(polled)
        if results is None:
            return
        self.checkpoint("fetched")
        accounts = {member.id: member.lastfm_username for member in polled}
        outcomes = _outcomes(results, self.wallclock(), settings.max_poll_interval_s, accounts)
        # A busy or full database loses the database's copy only: the run still
        # publishes what it fetched, from memory, and the next run stores it.
        self._write_database("the fetched tracks", lambda: members.record_outcomes(connection, outcomes))
        # A member removed, made private or linked to another account while the
        # run was fetching wins over what the run fetched for them.
        public_members = self._current_members(public_members)
        results = _for_linked_accounts(results, accounts, public_members)
        result.members = len(public_members)
        merged = self.merge(public_members, results)
        answered = merged.fetched + merged.dropped
        tracks = merged.tracks[: settings.snapshot_items]
        result.tracks = len(tracks)
        if polled and answered == 0:
            self._restore_if_missing(tracks)
            return
        last_updated = merged.last_updated or self.started
        self._note_pointer_behind()
        self._publish_for_members(tracks, last_updated)

    def fetch(self, polled: list[members.Member]) -> dict[int, FetchResult] | None:
        """Publish, step 2: fetch the polled members by the deadline; None (outcome config) when the key is refused."""
        self.lastfm = make_lastfm_client(self.settings, self.clock)
        try:
            return fetch_all(
                self.lastfm,
                polled,
                concurrency=self.settings.concurrency,
                deadline=self.start_clock + self.settings.deadline_s,
                clock=self.clock,
                wallclock=self.wallclock,
            )
        except LastfmFatalError as error:
            self.result.end(Outcome.CONFIG, error=str(error))
            logger.error("Last.fm rejected the API key: %s; check LASTFM_API_KEY", error)
            return None

    def merge(self, public_members: list[members.Member], results: Mapping[int, FetchResult]) -> Merged:
        """Publish, step 2: merge the results with the last known tracks and count them in the result."""
        merged = merge(
            public_members,
            results,
            started=self.started,
            fresh_s=self.settings.fresh_s,
            max_stale_s=self.settings.max_stale_s,
        )
        result = self.result
        result.fetched, result.carried, result.dropped = merged.fetched, merged.carried, merged.dropped
        result.failed, result.deferred = merged.failed, merged.deferred
        return merged

    def _write_database(self, what: str, write: Callable[[], None]) -> None:
        """Run write; when the database refuses it, name why in result.db and log one line, never raise."""
        try:
            write()
        except members.ERRORS as error:
            kind, message = members.describe_failure(error, self.settings.database, self.settings.db_busy_s)
            if kind == "unavailable":
                # The shared database is gone (and its guard with it): publish nothing, exit 1.
                raise members.DatabaseError(message, kind=kind) from None
            self.result.db = self.result.db or kind
            logger.error("could not store %s: %s", what, message)

    def _current_members(self, read_before: list[members.Member]) -> list[members.Member]:
        """Return the public members as they are now; the list read before, if the database cannot say."""
        try:
            return members.list_members(self.connection, public_only=True)
        except members.ERRORS as error:
            logger.warning("could not read the members again (%s); using the list read at the start", error)
            return read_before

    def _linked_now(self, tracks: list[Track]) -> list[Track]:
        """Return the tracks still linked to their member as the database says now; all of them if it cannot say."""
        try:
            return _still_linked(tracks, members.list_members(self.connection, public_only=True))
        except members.ERRORS as error:
            logger.warning("could not check the members again: %s", error)
            return tracks

    def _publish_for_members(self, tracks: list[Track], last_updated: datetime) -> None:
        """Publish tracks; if a member is removed, made private or relinked meanwhile, publish without them.

        The snapshot is built before the publish. A change seen just before the
        pointer moves stops that publish (the snapshot stays unnamed and
        expires); a change after the pointer moved is corrected at once by a
        second publish, one generation later, rather than by the next run.
        """
        result = self.result

        def guarded(step: str) -> None:
            self.checkpoint(step)
            if step == "pointer-read" and len(self._linked_now(tracks)) != len(tracks):
                raise _MembersChangedError

        try:
            self.publish(tracks, last_updated, guarded)
        except _MembersChangedError:
            pass
        else:
            if result.exit_code != EXIT_OK or result.outcome is not Outcome.PUBLISHED:
                return
        kept = self._linked_now(tracks)
        if len(kept) == len(tracks):
            return
        logger.warning(
            "%d member(s) removed, made private or relinked while publishing; publishing again without them",
            len(tracks) - len(kept),
        )
        result.tracks = len(kept)
        self.publish(kept, last_updated, publisher.no_checkpoint, offset=1)

    def _restore_if_missing(self, tracks: list[Track]) -> None:
        """Publish, step 3 (docs/design.md): Last.fm failed for everyone; republish only what a cache loss erased."""
        result = self.result
        result.error = "no member could be fetched from Last.fm"
        try:
            current = publisher.read_published(self.client, self.settings.key_prefix)
        except publisher.PublishError as error:
            result.error += f"; {error}"
            logger.error("%s", result.error)
            return
        if current is not None or not tracks:
            logger.error("%s; the current snapshot stays as it is", result.error)
            return
        last_updated = max(track.fetched_at for track in tracks)
        self.publish(tracks, last_updated, self.checkpoint)
        if result.exit_code == EXIT_OK:
            # Published or superseded: either way the run only restored data (exit 1).
            result.end(Outcome.RESTORED)
            logger.error("%s; the snapshot was missing, so the last known tracks were republished", result.error)

    def publish(
        self, tracks: list[Track], last_updated: datetime, checkpoint: publisher.Checkpoint, *, offset: int = 0
    ) -> None:
        """Publish, steps 4-6: tracks as the run's generation (plus offset, for a corrected second publish)."""
        result = self.result
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
                "fetchSeconds": round(self.clock() - self.start_clock, 3),
            },
        )
        try:
            outcome = publisher.publish_snapshot(
                self.client,
                self.settings.key_prefix,
                snapshot,
                expiry_s=self.settings.max_stale_s,
                checkpoint=checkpoint,
            )
        except publisher.PublishError as error:
            result.end(Outcome.FAILED, error=str(error))
            logger.error("publish failed: %s", error)
            return
        result.end(Outcome(outcome.value))

    def _note_pointer_behind(self) -> None:
        """Log a pointer older than this job's last publish: the publish that follows moves it forward as usual.

        A memcached server that rejoins a pool with old data (cut off, not
        restarted) holds an old pointer; web workers keep showing the newer
        snapshot they have (docs/design.md, Read) until this run replaces it.
        """
        known = members.last_published_generation(self.connection)
        current = publisher.pointer_generation(self.client, self.settings.key_prefix)
        if known is not None and current is not None and current < known:
            logger.warning(
                "pointer at generation %s is older than generation %s this job published last"
                " (a memcached server rejoined with old data?); moving it forward",
                current,
                known,
            )

    def summary(self) -> None:
        """End the run: its duration, one INFO summary line, the metrics file."""
        result = self.result
        if not result.duration_s:
            # A run recorded in the database already has its duration (the stored summary's).
            result.duration_s = self.clock() - self.start_clock
        logger.info("%s", result.summary())
        warm_metrics.write_run_metrics(self.settings.metrics_file, result)


def _for_linked_accounts(
    results: Mapping[int, FetchResult], accounts: Mapping[int, str], current: list[members.Member]
) -> dict[int, FetchResult]:
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


def _outcomes(
    results: Mapping[int, FetchResult], now: datetime, ceiling_s: int, accounts: Mapping[int, str] | None = None
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
            outcomes.append(members.FetchOutcome(member_id, FetchStatus.OK, value, next_poll, account))
        elif isinstance(value, NoScrobbles):
            outcomes.append(members.FetchOutcome(member_id, FetchStatus.OK, None, later, account))
        elif isinstance(value, LastfmPermanentError):
            outcomes.append(members.FetchOutcome(member_id, FetchStatus(value.reason), None, later, account))
        else:
            # A transient failure: try again next cycle.
            outcomes.append(members.FetchOutcome(member_id, FetchStatus.FAILED, None, now, account))
    return outcomes


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

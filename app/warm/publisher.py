"""Publishing snapshots: the only module that writes to memcached.

It implements the write half of the snapshot protocol (docs/design.md, Publish): `add` the
snapshot under its generation's key, read it back byte for byte, then move
the pointer forward with compare-and-swap, never backwards. It also holds the
run lease and the legacy-key purge, the other two writes the system makes.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import pylibmc

from app.core.snapshot import Pointer
from app.core.snapshot import Snapshot
from app.core.snapshot import SnapshotInvalidError
from app.core.snapshot import decode_pointer
from app.core.snapshot import decode_snapshot
from app.core.snapshot import encode_pointer
from app.core.snapshot import encode_snapshot
from app.core.snapshot import lease_key
from app.core.snapshot import legacy_keys
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key

# Named as in every log line (logger=app.publisher), whatever the module's place in the package.
logger = logging.getLogger("app.publisher")

# CAS conflicts mean another writer moved the pointer between our gets and
# cas; each retry re-reads it, so a handful is plenty.
MAX_CAS_ATTEMPTS = 10

Checkpoint = Callable[[str], None]


class PublishError(Exception):
    """Raised when a snapshot could not be published; the pointer was not moved to it."""


class PublishOutcome(enum.Enum):
    """How a publish ended when it did not fail."""

    PUBLISHED = "published"
    SUPERSEDED = "superseded"


def no_checkpoint(step: str) -> None:
    """The Checkpoint of a normal publish: nothing happens between the steps."""
    return None


def publish_snapshot(
    client: pylibmc.Client,
    prefix: str,
    snapshot: Snapshot,
    *,
    expiry_s: int,
    checkpoint: Checkpoint = no_checkpoint,
) -> PublishOutcome:
    """Publish snapshot and move the pointer to it unless a newer one is current.

    checkpoint(step) is called after each protocol step ("snapshot-written",
    "read-back", "pointer-read", "pointer-swapped") so tests can stop or pause
    a run at an exact point. Raise PublishError when the cache fails or the
    read-back does not match.
    """
    generation = snapshot.generation
    key = snapshot_key(prefix, generation)
    payload = encode_snapshot(snapshot)
    try:
        # Publish, step 4 (docs/design.md): `add`, never `set`: a failed set drops the old value.
        if not client.add(key, payload, time=expiry_s):
            logger.warning("snapshot key %s already exists; checking it holds this run's bytes", key)
        checkpoint("snapshot-written")
        # Read back before the pointer may name the key.
        stored = client.get(key)
    except pylibmc.Error as error:
        raise PublishError(f"memcached failed writing {key}: {error}") from error
    if stored != payload:
        what = "is missing" if stored is None else f"differs ({len(stored)} bytes, expected {len(payload)})"
        raise PublishError(f"read-back of {key} {what}; pointer left unchanged")
    checkpoint("read-back")
    return _swap_pointer(client, prefix, generation, expiry_s, checkpoint)


def _swap_pointer(
    client: pylibmc.Client, prefix: str, generation: int, expiry_s: int, checkpoint: Checkpoint
) -> PublishOutcome:
    key = pointer_key(prefix)
    try:
        for attempt in range(1, MAX_CAS_ATTEMPTS + 1):
            raw, cas_id = client.gets(key)
            checkpoint("pointer-read")
            if raw is None:
                # Publish, step 5 (docs/design.md): `add` when there is no pointer yet; losing
                # the race means somebody else created one: read it again.
                if client.add(key, encode_pointer(Pointer(generation, None)), time=expiry_s):
                    break
                continue
            previous = _previous_generation(key, raw)
            if previous is not None and previous >= generation:
                logger.info("pointer already at generation %s, not moving it to older %s", previous, generation)
                return PublishOutcome.SUPERSEDED
            if client.cas(key, encode_pointer(Pointer(generation, previous)), cas_id, time=expiry_s):
                break
            logger.info("pointer changed during swap (attempt %d); retrying", attempt)
        else:
            raise PublishError(f"pointer {key} kept changing; gave up after {MAX_CAS_ATTEMPTS} attempts")
        checkpoint("pointer-swapped")
        # Publish, step 6 (docs/design.md): only a pointer read back at (or past) our
        # generation counts as published.
        current = client.get(key)
    except pylibmc.Error as error:
        raise PublishError(f"memcached failed moving pointer {key}: {error}") from error
    try:
        pointer = decode_pointer(current) if current is not None else None
    except SnapshotInvalidError as error:
        raise PublishError(f"pointer {key} read back invalid: {error}") from error
    if pointer is None or pointer.generation < generation:
        found = "missing" if pointer is None else f"at generation {pointer.generation}"
        raise PublishError(f"pointer {key} read back {found}, expected {generation}")
    if pointer.generation > generation:
        logger.info("pointer already moved on to generation %s after ours (%s)", pointer.generation, generation)
    return PublishOutcome.PUBLISHED


def _previous_generation(key: str, raw: bytes) -> int | None:
    """Return the generation a pointer value names, or None for a value that is not a pointer."""
    try:
        return decode_pointer(raw).generation
    except SnapshotInvalidError as error:
        logger.warning("invalid value under %s replaced: %s", key, error)
        return None


def read_published(client: pylibmc.Client, prefix: str) -> Snapshot | None:
    """Return the snapshot the pointer names, or None when the pointer or snapshot is missing or invalid."""
    try:
        raw_pointer = client.get(pointer_key(prefix))
        if raw_pointer is None:
            return None
        pointer = decode_pointer(raw_pointer)
        raw = client.get(snapshot_key(prefix, pointer.generation))
        return decode_snapshot(raw, pointer.generation) if raw is not None else None
    except SnapshotInvalidError:
        return None
    except pylibmc.Error as error:
        raise PublishError(f"memcached failed reading the current snapshot: {error}") from error


def pointer_generation(client: pylibmc.Client, prefix: str) -> int | None:
    """Return the generation the pointer names, or None when it is missing, invalid or cannot be read."""
    try:
        raw = client.get(pointer_key(prefix))
        return decode_pointer(raw).generation if raw is not None else None
    except (SnapshotInvalidError, pylibmc.Error):
        return None


def _lease_value(generation: int, owner: str) -> bytes:
    return f"{generation} {owner}".encode()


def acquire_lease(client: pylibmc.Client, prefix: str, generation: int, owner: str, ttl_s: int) -> bool:
    """Take the run lease for ttl_s seconds; return False when another run holds it.

    owner names this host and its lock file. The caller holds that local
    lock, so a lease still held by the same owner belongs to a run that died
    (the kernel released its lock): it is taken over instead of blocking
    every run until it expires.
    """
    key = lease_key(prefix)
    value = _lease_value(generation, owner)
    try:
        if client.add(key, value, time=ttl_s):
            return True
        held, cas_id = client.gets(key)
        if held is None:
            return bool(client.add(key, value, time=ttl_s))
        if held.split(b" ", 1)[-1] != owner.encode("utf-8"):
            return False
        logger.warning("taking over lease %s left by a run on this host that died", key)
        return bool(client.cas(key, value, cas_id, time=ttl_s))
    except pylibmc.Error as error:
        raise PublishError(f"memcached failed taking the lease: {error}") from error


def release_lease(client: pylibmc.Client, prefix: str, generation: int, owner: str) -> None:
    """Release the run lease if this run still holds it; errors are logged, the lease then expires."""
    key = lease_key(prefix)
    try:
        if client.get(key) == _lease_value(generation, owner):
            client.delete(key)
    except pylibmc.Error as error:
        logger.warning("could not release lease %s (it expires by itself): %s", key, error)


def purge_legacy_keys(client: pylibmc.Client, prefix: str) -> list[str]:
    """Delete the old system's keys; return the ones that existed."""
    deleted = []
    for key in legacy_keys(prefix):
        try:
            if client.get(key) is not None and client.delete(key):
                deleted.append(key)
        except pylibmc.Error as error:
            raise PublishError(f"memcached failed purging {key}: {error}") from error
    return deleted

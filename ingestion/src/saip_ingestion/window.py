"""Bounded dedupe and anti-replay on the authenticated ``(producer_id, seq)``.

Each producer has a sliding window of ``W`` sequence numbers below its highest accepted
``seq`` — the IPsec anti-replay scheme of RFC 4303 §3.4.3 (a bitmap of the last ``W`` numbers;
anything at or below ``highest − W`` is refused) — extended with, per window slot, the outcome
of the record that used it and short hashes of its leaf and its ``record_id``:

* a ``seq`` below the window → ``seq_out_of_window`` (it cannot be told apart from a replay);
* a ``seq`` in use with the same leaf prefix → an exact re-delivery (``duplicate``, or the
  same quarantine reason again); with another leaf prefix → ``replay``;
* a new ``seq`` whose ``record_id`` is in use by another ``seq`` of the window → ``conflict``.

Memory is ``O(producers × W)``: per producer one status byte, an 8-byte leaf prefix and an
8-byte record-id hash per slot (``17 × W`` bytes, 1.1 MiB for ``W = 65536``, allocated with the
window) plus the set of the window's record-id hashes (≈ 60 B per record, ≤ ``W``); it does
not grow with the rate or the time. Producers are authenticated before this check, so one
producer cannot touch another's window.

Persistence: one binary file per producer (``windows/<producer_id>.win``), rewritten atomically
only when the producer's window changed since the last snapshot (incremental); the journal holds
the marks of each batch in between (see :mod:`saip_ingestion.state`). Applying a mark is
idempotent and a mark for a ``seq`` that has since slid out of the window is ignored, so a
journal replayed over a newer window file changes nothing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np

from saip_ingestion.backends.local import atomic_write
from saip_ingestion.errors import IngestError

__all__ = ["BELOW", "OUTCOMES", "SeqWindows", "rid_hash"]

#: outcome codes stored per slot: 0 = free, then these (index + 1)
OUTCOMES: Final[tuple[str, ...]] = (
    "a",  # accepted
    "legacy",  # seq used before the state format had per-slot content (upgrade)
    "out_of_range",
    "label_invalid",
    "shape_mismatch",
    "schema_invalid",
    "unsanitizable",
    "confusable_text",
    "oversized_field",
    "non_finite",
    "internal_error",
)
_CODE: Final = {name: i + 1 for i, name in enumerate(OUTCOMES)}
_ACCEPTED: Final = _CODE["a"]
#: ``lookup`` result for a ``seq`` at or below ``highest − W``
BELOW: Final = "below"
_MAGIC: Final = b"SAIPWIN1"
_HEAD: Final = struct.Struct("<8sQQI")  # magic, batch, highest + 1, window
_PREFIX: Final = 8


def rid_hash(record_id: str) -> bytes:
    """8-byte hash of a record id (SHA-256 prefix; the producer is authenticated)."""
    return hashlib.sha256(record_id.encode()).digest()[:_PREFIX]


def _int(buf: bytearray, slot: int) -> int:
    return int.from_bytes(buf[slot * _PREFIX : slot * _PREFIX + _PREFIX], "little")


class _Window:
    __slots__ = ("batch", "highest", "leaf", "rid", "rids", "size", "status")

    def __init__(self, size: int) -> None:
        self.size = size
        self.highest = -1
        self.batch = 0  # last batch persisted in this producer's window file
        self.status = bytearray(size)
        self.leaf = bytearray(size * _PREFIX)
        self.rid = bytearray(size * _PREFIX)
        self.rids: set[int] = set()  # record-id hashes in the window (ints: ≈ 60 B each)

    def advance(self, seq: int) -> None:
        """Slide the window so that ``seq`` is the highest; evict what falls out."""
        size, status = self.size, self.status
        if seq - self.highest >= size:  # every slot falls out
            self.status = bytearray(size)
            self.rids.clear()
        else:
            rid, rids = self.rid, self.rids
            for s in range(self.highest + 1, seq + 1):
                slot = s % size
                if status[slot]:
                    rids.discard(_int(rid, slot))
                    status[slot] = 0
        self.highest = seq

    def put(self, seq: int, leaf8: bytes, rid8: bytes, code: int) -> None:
        if seq <= self.highest - self.size:
            return  # slid out since: nothing to remember (idempotent journal replay)
        if seq > self.highest:
            self.advance(seq)
        slot = seq % self.size
        off = slot * _PREFIX
        if self.status[slot]:
            self.rids.discard(_int(self.rid, slot))
        self.status[slot] = code
        self.leaf[off : off + _PREFIX] = leaf8
        self.rid[off : off + _PREFIX] = rid8
        if code != _CODE["legacy"]:
            self.rids.add(int.from_bytes(rid8, "little"))

    def slots(self) -> Iterable[tuple[int, int]]:
        """``(seq, slot)`` of every used slot."""
        h, size = self.highest, self.size
        for slot, code in enumerate(self.status):
            if code:
                seq = h - ((h - slot) % size)
                if seq >= 0:
                    yield seq, slot


class SeqWindows:
    """Per-producer sliding windows (see the module docstring).

    Parameters
    ----------
    window:
        ``W``: how far below a producer's highest ``seq`` a late (reordered) record may still
        arrive; also how long an exact re-delivery is recognised and a ``record_id`` stays
        unique (counted in sequence numbers, not time).
    """

    def __init__(self, *, window: int) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 2**24:
            raise ValueError("seq_window must be an int in 1..16777216")
        self.window = window
        self._w: dict[str, _Window] = {}
        self.dirty: set[str] = set()

    # ------------------------------------------------------------------ queries

    def lookup(self, producer_id: str, seq: int) -> tuple[str, bytes] | str | None:
        """``None`` (free), :data:`BELOW`, or ``(outcome, leaf prefix)`` of the slot's record."""
        w = self._w.get(producer_id)
        if w is None or seq > w.highest:
            return None
        if seq <= w.highest - w.size:
            return BELOW
        slot = seq % w.size
        code = w.status[slot]
        if not code:
            return None
        return OUTCOMES[code - 1], bytes(w.leaf[slot * _PREFIX : slot * _PREFIX + _PREFIX])

    def has_record_id(self, producer_id: str, rid8: bytes) -> bool:
        """Whether a record of the window had this record-id hash."""
        w = self._w.get(producer_id)
        return w is not None and int.from_bytes(rid8, "little") in w.rids

    def highest(self, producer_id: str) -> int:
        """Highest ``seq`` seen for ``producer_id`` (−1 if none)."""
        w = self._w.get(producer_id)
        return -1 if w is None else w.highest

    # ------------------------------------------------------------------ updates

    def mark(self, producer_id: str, seq: int, leaf8: bytes, rid8: bytes, outcome: str) -> None:
        """Remember that ``seq`` was used by a record (leaf prefix, record-id hash, outcome)."""
        code = _CODE.get(outcome, _CODE["internal_error"])
        w = self._w.get(producer_id)
        if w is None:
            w = self._w[producer_id] = _Window(self.window)
        w.put(seq, bytes(leaf8[:_PREFIX]), bytes(rid8[:_PREFIX]), code)
        self.dirty.add(producer_id)

    def accept_new(self, producer_id: str, seq: int, leaf8: bytes, rid8: bytes) -> bool:
        """The common case in one call: if ``seq`` is above the producer's highest and
        ``rid8`` is not in its window, mark ``seq`` accepted and return ``True``; else change
        nothing and return ``False`` (the caller then decides with :meth:`lookup` and
        :meth:`has_record_id`, which give the same answer for these cases: ``lookup`` is
        ``None`` above the highest, so only the record-id check remains, made here before the
        window slides, as the caller would)."""
        w = self._w.get(producer_id)
        rid = int.from_bytes(rid8, "little")
        if w is None:
            w = self._w[producer_id] = _Window(self.window)
        elif seq <= w.highest or rid in w.rids:
            return False
        w.advance(seq)  # frees every slot up to seq: seq's slot is free now
        off = (seq % w.size) * _PREFIX
        w.status[seq % w.size] = _ACCEPTED
        w.leaf[off : off + _PREFIX] = leaf8
        w.rid[off : off + _PREFIX] = rid8
        w.rids.add(rid)
        self.dirty.add(producer_id)
        return True

    def accept_run(
        self,
        producer_id: str,
        seqs: Sequence[int],
        leaf8s: Sequence[bytes],
        rid8s: Sequence[bytes],
    ) -> bool:
        """A whole run of one producer's records accepted at once, when deciding them one by
        one in the given order would accept every one: ``True`` after the same state changes,
        or ``False`` with nothing changed (the caller then decides record by record).

        "One by one" is the engine's per-record path: :meth:`accept_new`, and where it declines
        (a ``seq`` below one accepted earlier in the run, e.g. the records of a v2 batch carried
        from an earlier poll), :meth:`lookup` + :meth:`has_record_id` + :meth:`mark`. Taken only
        when it provably gives the same answers and state: ``seqs`` distinct, all above the
        highest and spanning fewer than ``W`` (every one stays in the window, no slot written
        twice), record-id hashes 8 bytes each, distinct and not in the window (the one-by-one
        checks see a subset of the window's ids plus the run's own), and no evicted slot holds
        one of the run's ids (one by one, evictions discard ids as they go; here all evictions
        come first). The evictions are those of the one-by-one path: every used slot of
        ``(highest, max(seqs)]``, or the whole window when the lowest ``seq`` is ``W`` or more
        above the highest (property test in ``tests/ingestion/test_ing_speed_paths.py``).
        """
        n = len(seqs)
        if not n or n != len(leaf8s) or n != len(rid8s):
            return False
        size = self.window
        w = self._w.get(producer_id)
        high = -1 if w is None else w.highest
        if w is not None:
            size = w.size
        arr = np.asarray(seqs, dtype=np.int64)  # seqs are validated to 0..2**63 - 1
        first, last = int(arr.min()), int(arr.max())
        if first <= high or last - first >= size or len(set(seqs)) != n:
            return False
        rid_blob = b"".join(rid8s)
        leaf_blob = b"".join(leaf8s)
        if len(rid_blob) != n * _PREFIX or len(leaf_blob) != n * _PREFIX:
            return False
        rids = np.frombuffer(rid_blob, dtype="<u8").tolist()
        new = set(rids)
        if len(new) != n or (w is not None and not new.isdisjoint(w.rids)):
            return False
        slots = arr % size
        evicted: list[int] = []
        reset = w is None or first - high >= size
        if w is not None and not reset:
            status = np.frombuffer(w.status, dtype=np.uint8)
            span = (
                np.arange(high + 1, last + 1, dtype=np.int64) % size if last - high < size else None
            )
            gone = np.flatnonzero(status) if span is None else span[status[span] != 0]
            evicted = np.frombuffer(w.rid, dtype="<u8")[gone].tolist()
            if not new.isdisjoint(evicted):
                return False
        # every check passed: apply (nothing below can fail half-way)
        if w is None:
            w = self._w[producer_id] = _Window(self.window)
        if reset:
            w.status = bytearray(w.size)
            w.rids.clear()
        else:
            status[gone] = 0
            w.rids.difference_update(evicted)
        w.highest = last
        np.frombuffer(w.status, dtype=np.uint8)[slots] = _ACCEPTED
        np.frombuffer(w.leaf, dtype=np.uint8).reshape(-1, _PREFIX)[slots] = np.frombuffer(
            leaf_blob, dtype=np.uint8
        ).reshape(-1, _PREFIX)
        np.frombuffer(w.rid, dtype=np.uint8).reshape(-1, _PREFIX)[slots] = np.frombuffer(
            rid_blob, dtype=np.uint8
        ).reshape(-1, _PREFIX)
        w.rids.update(new)
        self.dirty.add(producer_id)
        return True

    def apply(self, marks: Iterable[Sequence[object]], *, batch: int) -> None:
        """Apply journal marks ``[producer_id, seq, leaf8 hex, rid8 hex, outcome]`` of ``batch``;
        a producer whose window file already includes ``batch`` is skipped."""
        for pid, seq, leaf, rid, outcome in marks:
            w = self._w.get(str(pid))
            if w is not None and w.batch >= batch:
                continue
            self.mark(str(pid), int(str(seq)), bytes.fromhex(str(leaf)),
                      bytes.fromhex(str(rid)), str(outcome))  # fmt: skip

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path, *, batch: int) -> int:
        """Write the window of every producer changed since the last save; return how many."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        written = 0
        for pid in sorted(self.dirty):
            w = self._w[pid]
            w.batch = batch
            head = _HEAD.pack(_MAGIC, batch, w.highest + 1, w.size)
            atomic_write(directory / f"{pid}.win", b"".join((head, w.status, w.leaf, w.rid)))
            written += 1
        self.dirty.clear()
        return written

    def load(self, directory: Path) -> None:
        """Read every producer's window file (a file of another ``W`` is re-slotted)."""
        self._w = {}
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.win")):
            data = path.read_bytes()
            try:
                magic, batch, high1, size = _HEAD.unpack_from(data)
            except struct.error:
                raise IngestError(f"window file {path} is truncated") from None
            if (
                magic != _MAGIC
                or size < 1
                or len(data) != _HEAD.size + size * (1 + 2 * _PREFIX)
                or max(data[_HEAD.size : _HEAD.size + size]) > len(OUTCOMES)
            ):
                raise IngestError(f"window file {path} is corrupt")
            w = _Window(size)
            w.batch, w.highest = batch, high1 - 1
            o = _HEAD.size
            w.status[:] = data[o : o + size]
            w.leaf[:] = data[o + size : o + size * (1 + _PREFIX)]
            w.rid[:] = data[o + size * (1 + _PREFIX) :]
            legacy = _CODE["legacy"]
            w.rids = {_int(w.rid, slot) for _seq, slot in w.slots() if w.status[slot] != legacy}
            if size != self.window:
                w = self._resized(w)
                self.dirty.add(path.stem)
            self._w[path.stem] = w

    def _resized(self, old: _Window) -> _Window:
        new = _Window(self.window)
        new.batch = old.batch
        new.highest = old.highest
        for seq, slot in sorted(old.slots()):
            o = slot * _PREFIX
            new.put(seq, bytes(old.leaf[o : o + _PREFIX]), bytes(old.rid[o : o + _PREFIX]),
                    old.status[slot])  # fmt: skip
        return new

    def memory_bytes(self) -> int:
        """Bytes held by the slot arrays (the record-id maps come on top, ≤ W entries each)."""
        return sum(len(w.status) + len(w.leaf) + len(w.rid) for w in self._w.values())

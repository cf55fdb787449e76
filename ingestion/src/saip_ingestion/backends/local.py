"""The embedded ``local`` backend: append-only segment files and an object directory.

Layout under ``<data_dir>/ingest/``::

    stream/segment-000001.log   frames: u32 length | u32 CRC-32 | payload (little-endian)
    stream/checkpoint.json      {"segment": n, "offset": bytes} after the last stored message
    objects/<key>               one file per object, written atomically (tmp, fsync, rename)
    objects.meta/<key>.json     the object's metadata, if any

Writes are crash-safe: a torn frame at the tail of a segment (the publisher died mid-write) is
cut off by the next publisher; an object either exists completely or not at all. ``put`` of an
existing key with the same bytes is a no-op; different bytes raise (never overwritten).

:class:`FileRecordStream` reads a JSONL file as a stream (``--source FILE``) with the same
checkpoint semantics; lines longer than the limit are delivered truncated (one byte over the
limit) so that the engine quarantines them as ``oversized`` without reading them into memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.errors import IngestError
from saip_ingestion.schemas import MAX_LINE_BYTES

__all__ = ["FileRecordStream", "LocalObjectStore", "LocalStream", "open_backend"]

_FRAME: Final = struct.Struct("<II")
_SEGMENT_BYTES: Final = 64 * 1024 * 1024
_HEAD_BYTES: Final = 4096
_log = logging.getLogger(__name__)
_KEY_SEGMENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._=-]{0,254}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically and durably (tmp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class LocalObjectStore:
    """Objects as files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._meta = self.root.parent / f"{self.root.name}.meta"

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not key:
            raise ValueError("object key must be a non-empty string")
        parts = key.split("/")
        if any(p in (".", "..") or not _KEY_SEGMENT.fullmatch(p) for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write ``data`` under ``key``; the same bytes again are a no-op.

        Raises
        ------
        IngestError
            The key exists with different content (never overwritten; same rule as the cloud
            stores, so two writers that collide are detected instead of losing a batch).
        """
        path = self._path(key)
        if path.exists():
            if path.read_bytes() != bytes(data):
                raise IngestError(f"object {key} already exists with different content")
            return
        if metadata:
            meta = json.dumps(dict(metadata), sort_keys=True).encode()
            atomic_write(self._meta.joinpath(*key.split("/")).with_suffix(".json"), meta)
        atomic_write(path, bytes(data))

    def get(self, key: str) -> bytes:
        """Read ``key`` (``KeyError`` if absent)."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        return self._path(key).is_file()

    def metadata(self, key: str) -> dict[str, str]:
        """Metadata written with ``key`` (empty if none)."""
        self._path(key)
        path = self._meta.joinpath(*key.split("/")).with_suffix(".json")
        if not path.is_file():
            return {}
        data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` in lexicographic order (walks only the prefix's directory)."""
        parts = prefix.split("/")[:-1]
        if any(p in (".", "..") or not _KEY_SEGMENT.fullmatch(p) for p in parts):
            return iter(())
        base = self.root.joinpath(*parts)
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root)
            for name in files:
                if name.startswith("."):
                    continue
                key = (rel / name).as_posix() if rel.parts else name
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))


class LocalStream:
    """Append-only segment files with one consumer checkpoint (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        segment_bytes: int = _SEGMENT_BYTES,
        max_message_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be >= 1024")
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be >= 1")
        self.max_message_bytes = max_message_bytes
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.segment_bytes = segment_bytes
        self._checkpoint_path = self.root / "checkpoint.json"
        self._read_pos: tuple[int, int] | None = None

    def _segment(self, n: int) -> Path:
        return self.root / f"segment-{n:06d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.root.glob("segment-*.log"))

    @staticmethod
    def _valid_end(fh: Any, size: int) -> int:
        pos = 0
        while pos + _FRAME.size <= size:
            fh.seek(pos)
            length, _crc = _FRAME.unpack(fh.read(_FRAME.size))
            if pos + _FRAME.size + length > size:
                break
            pos += _FRAME.size + length
        return pos

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Append ``payloads`` durably (one fsync per call); ``partition_key`` is ignored."""
        if not payloads:
            return
        with open(self.root / ".publish.lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            segments = self._segments() or [1]
            n = segments[-1]
            path = self._segment(n)
            with open(path, "a+b") as fh:
                size = fh.seek(0, os.SEEK_END)
                end = self._valid_end(fh, size)
                if end != size:  # torn tail from a publisher that died mid-write
                    fh.truncate(end)
                if end >= self.segment_bytes:
                    n += 1
            frames = b"".join(_FRAME.pack(len(p), zlib.crc32(p)) + bytes(p) for p in payloads)
            with open(self._segment(n), "ab") as fh:
                fh.write(frames)
                fh.flush()
                os.fsync(fh.fileno())

    def _load_checkpoint(self) -> tuple[int, int]:
        if not self._checkpoint_path.is_file():
            segments = self._segments()
            return (segments[0] if segments else 1), 0
        try:
            doc = json.loads(self._checkpoint_path.read_text(encoding="utf-8"))
            return int(doc["segment"]), int(doc["offset"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IngestError(
                f"stream checkpoint {self._checkpoint_path} is invalid: {exc}"
            ) from None

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Up to ``max_messages`` frames after the last position read (starting at the checkpoint).

        Returns immediately (``timeout`` is not needed: the files are local).
        """
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        seg, off = self._read_pos or self._load_checkpoint()
        out: list[StreamMessage] = []
        segments = self._segments()
        while len(out) < max_messages:
            path = self._segment(seg)
            if not path.exists():
                later = [s for s in segments if s > seg]
                if not later:
                    break
                seg, off = later[0], 0
                continue
            with open(path, "rb") as fh:
                fh.seek(off)
                while len(out) < max_messages:
                    head = fh.read(_FRAME.size)
                    if len(head) < _FRAME.size:
                        break
                    length, crc = _FRAME.unpack(head)
                    if length > self.max_message_bytes:
                        data = self._read_oversized(fh, length, crc, path, off)
                        if data is None:
                            break  # torn tail: not yet complete
                    else:
                        data = fh.read(length)
                    if len(data) < min(length, self.max_message_bytes + 1):
                        break  # torn tail: not yet complete
                    if length <= self.max_message_bytes and zlib.crc32(data) != crc:
                        raise IngestError(f"corrupt frame in {path} at offset {off}")
                    off += _FRAME.size + length
                    out.append(StreamMessage(data, "local", f"{seg}:{off}"))
            later = [s for s in segments if s > seg]
            if len(out) >= max_messages or not later:
                break
            seg, off = later[0], 0
        self._read_pos = (seg, off)
        return out

    def _read_oversized(self, fh: Any, length: int, crc: int, path: Path, off: int) -> bytes | None:
        """First ``max_message_bytes + 1`` bytes of a longer frame (memory stays bounded: the
        rest is read in 1 MiB chunks only for its CRC); ``None`` if the frame is incomplete."""
        head = fh.read(self.max_message_bytes + 1)
        running = zlib.crc32(head)
        left = length - len(head)
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                return None
            running = zlib.crc32(chunk, running)
            left -= len(chunk)
        if running != crc:
            raise IngestError(f"corrupt frame in {path} at offset {off}")
        data: bytes = head
        return data

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Persist the position after the last of ``messages``."""
        if not messages:
            return
        seg, off = (int(x) for x in messages[-1].position.split(":"))
        doc = json.dumps({"segment": seg, "offset": off}).encode()
        atomic_write(self._checkpoint_path, doc)

    def rewind(self) -> None:
        """Forget the read position (next poll restarts from the checkpoint)."""
        self._read_pos = None


class FileRecordStream:
    """A JSONL file read as a stream; the checkpoint lives in ``checkpoint_dir``.

    ``publish`` is not supported (the file is the producer's output).
    """

    def __init__(
        self, path: Path, *, checkpoint_dir: Path, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise IngestError(f"source file not found: {self.path}")
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be >= 1")
        self.max_line_bytes = max_line_bytes
        ident = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        self._checkpoint_path = Path(checkpoint_dir) / f"file-{ident}.json"
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._offset = self._load_checkpoint()
        self._fh.seek(self._offset)
        self._buf = b""
        self._pos = 0
        self.partition = self.path.name

    def _head_hash(self, length: int) -> str:
        """SHA-256 of the first ``min(length, 4096)`` bytes of the open file."""
        pos = self._fh.tell()
        self._fh.seek(0)
        digest = hashlib.sha256(self._fh.read(min(length, _HEAD_BYTES))).hexdigest()
        self._fh.seek(pos)
        return digest

    def _load_checkpoint(self) -> int:
        """Resume offset: 0 for a new or *replaced* file; an error for a file that shrank.

        The checkpoint records the file's identity (device, inode, size, mtime and a hash of
        its first bytes). A different inode or different first bytes means another file now
        has this name (log rotation, a re-export): it is read from the start and re-delivered
        records are recognised as duplicates. The same file, shorter than the checkpoint, was
        truncated or rewritten in place: that is refused, never silently skipped.
        """
        if not self._checkpoint_path.is_file():
            return 0
        try:
            doc = json.loads(self._checkpoint_path.read_text(encoding="utf-8"))
            offset = int(doc["offset"])
            ident = doc.get("file")
        except (ValueError, KeyError, TypeError) as exc:
            raise IngestError(
                f"file checkpoint {self._checkpoint_path} is invalid: {exc}"
            ) from None
        st = os.fstat(self._fh.fileno())
        if isinstance(ident, dict):
            same_inode = (ident.get("dev"), ident.get("ino")) == (st.st_dev, st.st_ino)
            if not same_inode:
                _log.warning("source %s was replaced; reading it from the start", self.path)
                return 0
        if offset > st.st_size:
            raise IngestError(
                f"source file {self.path} shrank to {st.st_size} bytes below its checkpoint "
                f"({offset} bytes read); it was truncated or rewritten in place — move the new "
                f"content to a new file (or delete {self._checkpoint_path} to re-read it)"
            )
        if isinstance(ident, dict) and self._head_hash(int(ident.get("head_len", 0))) != ident.get(
            "head_sha256"
        ):
            _log.warning("source %s was rewritten in place; reading it from the start", self.path)
            return 0
        return offset

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Not supported: a file source is read-only."""
        raise IngestError("a file source cannot be published to")

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Next ``max_messages`` lines (blank lines included: they are quarantined).

        Reads in 1 MiB chunks; a line longer than the limit is delivered as its first
        ``limit + 1`` bytes (the engine quarantines it as ``oversized``) and the rest is skipped.
        """
        out: list[StreamMessage] = []
        limit, part = self.max_line_bytes, self.partition
        while len(out) < max_messages:
            nl = self._buf.find(b"\n", self._pos)
            if nl < 0:
                if len(self._buf) - self._pos > limit:  # oversized line in progress
                    self._skip_oversized(out)
                    continue
                chunk = self._fh.read(1 << 20)
                if not chunk:
                    rest = self._buf[self._pos :]
                    if rest:  # last line without a newline
                        self._offset += len(rest)
                        self._buf, self._pos = b"", 0
                        out.append(StreamMessage(rest.rstrip(b"\r"), part, str(self._offset)))
                    break
                self._buf = self._buf[self._pos :] + chunk
                self._pos = 0
                continue
            # every complete line in the buffer at once (at most the number still wanted);
            # blank lines are delivered too: counted in ``received`` and quarantined, so the
            # counts account for every line of the file
            last = self._buf.rfind(b"\n", nl)
            lines = self._buf[self._pos : last].split(b"\n", max_messages - len(out))
            if len(lines) > max_messages - len(out):
                lines.pop()  # the rest of the buffer, not split
            offset, pos = self._offset, self._pos
            for line in lines:
                offset += len(line) + 1
                pos += len(line) + 1
                if len(line) > limit + 1:
                    line = line[: limit + 1]
                elif line.endswith(b"\r"):
                    line = line[:-1]
                out.append(StreamMessage(line, part, str(offset)))
            self._offset, self._pos = offset, pos
        return out

    def _skip_oversized(self, out: list[StreamMessage]) -> None:
        head = self._buf[self._pos : self._pos + self.max_line_bytes + 1]
        consumed = len(self._buf) - self._pos
        while True:
            chunk = self._fh.read(1 << 20)
            if not chunk:
                self._buf, self._pos = b"", 0
                break
            nl = chunk.find(b"\n")
            if nl >= 0:
                consumed += nl + 1
                self._buf, self._pos = chunk[nl + 1 :], 0
                break
            consumed += len(chunk)
        self._offset += consumed
        out.append(StreamMessage(head, self.partition, str(self._offset)))

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Persist the byte offset after the last of ``messages``."""
        if not messages:
            return
        offset = int(messages[-1].position)
        st = os.fstat(self._fh.fileno())
        head_len = min(offset, _HEAD_BYTES)
        doc = {
            "path": str(self.path.resolve()),
            "offset": offset,
            "file": {
                "dev": st.st_dev,
                "ino": st.st_ino,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "head_len": head_len,
                "head_sha256": self._head_hash(head_len),
            },
        }
        atomic_write(self._checkpoint_path, json.dumps(doc).encode())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def open_backend(
    *, data_dir: Path, segment_bytes: int = _SEGMENT_BYTES, **options: Any
) -> tuple[LocalStream, LocalObjectStore]:
    """Open the local backend under ``data_dir``.

    Raises
    ------
    ValueError
        An option the local backend does not use was given a value (``endpoint_url``,
        ``region``, ``stream``, ``bucket``).
    """
    unexpected = sorted(k for k, v in options.items() if v is not None)
    if unexpected:
        raise ValueError(f"the local backend does not take {', '.join(unexpected)}")
    base = Path(data_dir) / "ingest"
    return (
        LocalStream(base / "stream", segment_bytes=segment_bytes),
        LocalObjectStore(base / "objects"),
    )

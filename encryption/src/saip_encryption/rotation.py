"""Key rotation: re-wrap data keys without touching payloads, and audit key dependencies.

Re-wrapping is not re-keying: the data key stays the same. After a master-key (or data-key)
compromise, re-wrapping does not help — anyone who unwrapped a data key before keeps it —
*re-encrypt* the data under a fresh data key (``saip decrypt`` then ``saip encrypt``).

Re-wrapping unwraps only with the providers the caller passes (never with a key named in the
header: the header is unauthenticated until the commitment checks), applies the same allow-list
and signature policy as decryption (:func:`saip_encryption.envelope.recover_data_key`), and keeps
the header's signature field, which stays valid because it signs ``A || C`` only.

Re-wrapping (:func:`rewrap_file`, :func:`rewrap_bytes`) recovers an artifact's data key with the
current master key(s) — verifying the header's key commitment — and wraps it under the new
master key(s). Only the key area is rewritten: the authenticated prefix, the commitment and the
segments stay byte-for-byte the same, so the cost does not depend on the artifact's size.

Artifacts carry two key slots (A/B). An in-place re-wrap writes the new wrapped keys into the
inactive slot with a higher generation and ``fsync``\\s, then empties the old slot and
``fsync``\\s again; a crash at any point leaves at least one intact slot, and running the re-wrap
again completes it (a torn slot fails its CRC and is treated as empty by the re-wrap). When the
new keys do not fit the reserved slot capacity (or the message has one slot, like records), the
file is rewritten to a temporary file — the payload copied, not decrypted — and renamed over the
original atomically.

:func:`audit` lists, per master key and key version, which artifacts depend on it, from the
headers alone (no key is used), so no key version is disabled while data still needs it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from saip_encryption import wire
from saip_encryption.envelope import recover_data_key
from saip_encryption.errors import DecryptionError, EncryptionConfigError
from saip_encryption.providers.base import KeyProvider, WrappedKey
from saip_encryption.signing import HeaderVerifier

__all__ = [
    "AuditReport",
    "KeyUse",
    "RewrapResult",
    "audit",
    "read_header",
    "rewrap_bytes",
    "rewrap_file",
    "split_key_version",
]

_LOG = logging.getLogger(__name__)
_MAX_GENERATION = 0xFFFFFFFF


@dataclass(frozen=True)
class RewrapResult:
    """What a re-wrap did."""

    path: str
    in_place: bool
    old_keys: tuple[WrappedKey, ...]
    new_keys: tuple[WrappedKey, ...]


def _read_header_from(fh: BinaryIO) -> wire.Header:
    head = fh.read(wire.PREFIX_SIZE)
    need = wire.header_length_hint(head)  # range-checks each length before it is used
    while len(head) < need <= wire.MAX_HEADER_SIZE:
        more = fh.read(need - len(head))
        if not more:
            break
        head += more
        need = wire.header_length_hint(head)
    return wire.parse_header(head, strict=False)


def read_header(path: str | os.PathLike[str], *, strict: bool = False) -> wire.Header:
    """Read and parse the header of an envelope file (no key is used, nothing is decrypted).

    Raises
    ------
    wire.MalformedError
        Not a SAIP envelope, or a malformed header.
    """
    with open(path, "rb") as fh:
        header = _read_header_from(fh)
    if strict:
        return wire.parse_header(
            header.prefix
            + header.commitment
            + header.signature_field
            + wire.key_area([s.raw for s in header.slots], header.slot_capacity),
            strict=True,
        )
    return header


@dataclass(frozen=True)
class _Policy:
    allowed_key_ids: frozenset[str] | None
    max_wrapped_keys: int
    verify_with: tuple[HeaderVerifier, ...]
    allow_unsigned_public_key_wraps: bool


def _new_keys(
    data_key: bytearray, providers: Sequence[KeyProvider], context: Mapping[str, str]
) -> list[WrappedKey]:
    return [p.wrap(data_key, context=context) for p in providers]


def _recover(header: wire.Header, unwrap_with: Sequence[KeyProvider], policy: _Policy) -> bytearray:
    if not unwrap_with:
        raise EncryptionConfigError("rewrap needs at least one key to unwrap with")
    try:
        context = header.context
    except wire.MalformedError:
        raise DecryptionError() from None
    data_key, _prk, _k = recover_data_key(
        header,
        unwrap_with,
        context,
        allowed_key_ids=policy.allowed_key_ids,
        max_wrapped_keys=policy.max_wrapped_keys,
        verify_with=policy.verify_with,
        allow_unsigned_public_key_wraps=policy.allow_unsigned_public_key_wraps,
    )
    return data_key


def _policy(
    allowed_key_ids: Iterable[str] | None,
    max_wrapped_keys: int,
    verify_with: Sequence[HeaderVerifier],
    allow_unsigned_public_key_wraps: bool,
) -> _Policy:
    return _Policy(
        frozenset(allowed_key_ids) if allowed_key_ids is not None else None,
        max_wrapped_keys,
        tuple(verify_with),
        allow_unsigned_public_key_wraps,
    )


def rewrap_bytes(
    message: bytes,
    *,
    unwrap_with: Sequence[KeyProvider],
    wrap_with: Sequence[KeyProvider],
    max_wrapped_keys: int = 8,
    allowed_key_ids: Iterable[str] | None = None,
    verify_with: Sequence[HeaderVerifier] = (),
    allow_unsigned_public_key_wraps: bool = False,
) -> bytes:
    """Re-wrap an in-memory message (a record); returns the new message, payload unchanged.

    ``unwrap_with`` and the policy arguments are those of
    :func:`saip_encryption.envelope.recover_data_key`.

    Raises
    ------
    DecryptionError
        The message is malformed or its wrapped keys do not yield the committed data key.
    KeyProviderError
        No ``unwrap_with`` provider could unwrap (each failure listed).
    """
    if not wrap_with:
        raise EncryptionConfigError("rewrap needs at least one target key")
    policy = _policy(
        allowed_key_ids, max_wrapped_keys, verify_with, allow_unsigned_public_key_wraps
    )
    try:
        header = wire.parse_header(message, strict=False)
    except wire.MalformedError:
        raise DecryptionError() from None
    data_key = _recover(header, unwrap_with, policy)
    try:
        new = _new_keys(data_key, wrap_with, header.context)
    finally:
        data_key[:] = bytes(len(data_key))
    need = wire.slot_size(new)
    slots = [wire.encode_slot(new, generation=1, capacity=need)]
    if header.slot_count == 2:
        capacity = max(need, header.slot_capacity)
        slots = [
            wire.encode_slot(new, generation=1, capacity=capacity),
            wire.encode_slot((), generation=0, capacity=capacity),
        ]
        need = capacity
    area = wire.key_area(slots, need)
    return bytes(message[: header.key_area_offset]) + area + bytes(message[header.payload_offset :])


@contextmanager
def _locked(path: Path) -> Iterator[BinaryIO]:
    """Open ``path`` read-write under an exclusive advisory lock (``flock``).

    Concurrent re-wraps of one file run one after the other; if another re-wrap replaced the
    file (rewrite path) while we waited, the new file is opened and locked instead.
    """
    while True:
        fh = open(path, "r+b")  # noqa: SIM115 - closed below or by the caller's with
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except BaseException:
            fh.close()
            raise
        fh.close()
    try:
        yield fh
    finally:
        fh.close()


def rewrap_file(
    path: str | os.PathLike[str],
    *,
    unwrap_with: Sequence[KeyProvider],
    wrap_with: Sequence[KeyProvider],
    max_wrapped_keys: int = 8,
    allowed_key_ids: Iterable[str] | None = None,
    verify_with: Sequence[HeaderVerifier] = (),
    allow_unsigned_public_key_wraps: bool = False,
) -> RewrapResult:
    """Re-wrap one envelope file's data key under ``wrap_with`` (replacing the old wraps).

    Parameters
    ----------
    path:
        The artifact.
    unwrap_with:
        Providers able to unwrap the current data key (tried in order). Only these are used:
        never a key named by the header.
    wrap_with:
        The new master key(s); each gets a wrap of the same data key.
    max_wrapped_keys, allowed_key_ids, verify_with, allow_unsigned_public_key_wraps:
        The decryptor's policy (:func:`saip_encryption.envelope.recover_data_key`).

    Raises
    ------
    DecryptionError
        Not an envelope, or its wrapped keys do not yield the committed data key.
    KeyProviderError
        No ``unwrap_with`` provider could unwrap (each failure listed).
    """
    if not wrap_with:
        raise EncryptionConfigError("rewrap needs at least one target key")
    policy = _policy(
        allowed_key_ids, max_wrapped_keys, verify_with, allow_unsigned_public_key_wraps
    )
    p = Path(path)
    with _locked(p) as fh:
        try:
            header = _read_header_from(fh)
        except wire.MalformedError:
            raise DecryptionError() from None
        old = tuple(header.wrapped_keys())
        data_key = _recover(header, unwrap_with, policy)
        try:
            new = _new_keys(data_key, wrap_with, header.context)
        finally:
            data_key[:] = bytes(len(data_key))
        need = wire.slot_size(new)
        start = header.key_area_offset + 3
        live = [s for s in header.slots if s.valid and s.keys]
        newest = max(live, key=lambda s: s.generation)
        if (
            header.slot_count == 2
            and need <= header.slot_capacity
            and newest.generation < _MAX_GENERATION
        ):
            target = 1 - newest.index
            generation = newest.generation + 1
            cap = header.slot_capacity
            fh.seek(start + target * cap)
            fh.write(wire.encode_slot(new, generation=generation, capacity=cap))
            fh.flush()
            os.fsync(fh.fileno())
            fh.seek(start + newest.index * cap)
            fh.write(wire.encode_slot((), generation=0, capacity=cap))
            fh.flush()
            os.fsync(fh.fileno())
            _LOG.info("re-wrapped %s in place (slot %d, generation %d)", p, target, generation)
            return RewrapResult(str(p), True, old, tuple(new))
        # rewrite: new key area, payload copied byte for byte (never decrypted)
        cap = max(need, header.slot_capacity) if header.slot_count == 2 else need
        slots = [wire.encode_slot(new, generation=1, capacity=cap)]
        if header.slot_count == 2:
            slots.append(wire.encode_slot((), generation=0, capacity=cap))
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".rewrap", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(
                    header.prefix
                    + header.commitment
                    + header.signature_field
                    + wire.key_area(slots, cap)
                )
                fh.seek(header.payload_offset)
                shutil.copyfileobj(fh, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, p.stat().st_mode & 0o777)
            os.replace(tmp_name, p)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    _LOG.info("re-wrapped %s by rewriting its header", p)
    return RewrapResult(str(p), False, old, tuple(new))


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------

_LOCAL_VERSION = re.compile(r"^(?P<key>[0-9a-f]{32})/(?P<version>v[1-9][0-9]{0,9})$")
_GCP_VERSION = re.compile(r"^(?P<key>.+/cryptoKeys/[^/]+)/cryptoKeyVersions/(?P<version>[^/]+)$")
_AZURE_VERSION = re.compile(r"^(?P<key>https://[^/]+/keys/[^/]+)/(?P<version>[^/]+)$")


def split_key_version(provider: str, key_id: str) -> tuple[str, str]:
    """Split a wrapped key's ``key_id`` into (master key, version).

    AWS KMS keeps the key ARN across automatic and on-demand rotation and chooses the backing
    key from the ciphertext itself, so its version is reported as ``"(managed by KMS)"``.
    """
    patterns = {"local": _LOCAL_VERSION, "gcp-kms": _GCP_VERSION, "azure-kv": _AZURE_VERSION}
    pattern = patterns.get(provider)
    if pattern is not None:
        match = pattern.match(key_id)
        if match:
            return match.group("key"), match.group("version")
    if provider == "aws-kms":
        return key_id, "(managed by KMS)"
    return key_id, "(unknown)"


@dataclass
class KeyUse:
    """One master key version and the artifacts that depend on it."""

    provider: str
    key: str
    version: str
    files: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    """Result of :func:`audit`."""

    keys: list[KeyUse]
    scanned: int
    envelopes: int
    #: envelopes with a broken key slot (interrupted re-wrap, corruption): path → reason
    problems: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (``saip keys audit --json``)."""
        return {
            "scanned_files": self.scanned,
            "envelopes": self.envelopes,
            "keys": [
                {
                    "provider": k.provider,
                    "key": k.key,
                    "version": k.version,
                    "artifacts": len(k.files),
                    "files": k.files,
                }
                for k in self.keys
            ],
            "problems": self.problems,
        }


def _iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterable[Path]:
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        elif p.is_file():
            yield p
        else:
            raise EncryptionConfigError(f"audit path {p} does not exist")


def audit(paths: Iterable[str | os.PathLike[str]]) -> AuditReport:
    """List, per master key and key version, the envelope files that depend on it.

    Files that do not start with the SAIP magic are counted as scanned and skipped. Reading
    headers uses no key, so the audit works even while a key is disabled.
    """
    uses: dict[tuple[str, str, str], KeyUse] = {}
    scanned = envelopes = 0
    problems: dict[str, str] = {}
    for f in _iter_files(paths):
        scanned += 1
        try:
            with open(f, "rb") as fh:
                if fh.read(4) != wire.MAGIC:
                    continue
            header = read_header(f, strict=False)
        except wire.MalformedError as exc:
            envelopes += 1
            problems[str(f)] = f"unreadable header: {exc}"
            continue
        except OSError as exc:
            problems[str(f)] = f"cannot read: {exc.strerror}"
            continue
        envelopes += 1
        if not all(s.valid for s in header.slots):
            problems[str(f)] = "a key slot is broken (interrupted re-wrap?): run saip keys rewrap"
        for w in header.wrapped_keys():
            key, version = split_key_version(w.provider, w.key_id)
            use = uses.setdefault((w.provider, key, version), KeyUse(w.provider, key, version))
            if str(f) not in use.files:
                use.files.append(str(f))
    keys = sorted(uses.values(), key=lambda u: (u.provider, u.key, u.version))
    return AuditReport(keys=keys, scanned=scanned, envelopes=envelopes, problems=problems)

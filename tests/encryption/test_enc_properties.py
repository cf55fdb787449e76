"""Property tests (hypothesis) of everything that reads a header: any byte string yields the typed
error or a valid result — never another exception — and a failed re-wrap leaves the file as it was.

Inputs: random bytes behind the magic (v1 and v2 version bytes), and valid v1/v2 records and
artifacts (signed and unsigned) with random byte edits and truncations.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip.cli import main
from saip_encryption import DecryptionError, EncryptionConfigError, EnvelopeEncryptor, wire
from saip_encryption.errors import KeyProviderError
from saip_encryption.providers.local import LocalKeyProvider, create_local_key
from saip_encryption.rotation import AuditReport, audit, read_header, rewrap_bytes, rewrap_file

CTX = {"dataset": "prop"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
DATA = Path(__file__).with_name("data")


def _samples(key: LocalKeyProvider) -> list[bytes]:
    enc = EnvelopeEncryptor(key, cache=False, stream_segment_size=64, key_slot_capacity=128)
    out = io.BytesIO()
    enc.encrypt_stream(io.BytesIO(bytes(200)), out, context=CTX)
    return [
        enc.encrypt(b"record", context=CTX),
        out.getvalue(),
        (DATA / "v1-static-record.saip").read_bytes(),
        (DATA / "v1-static-artifact.saip").read_bytes()[:400],
    ]


def _blobs(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        blob = bytearray(draw(st.sampled_from(samples)))
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(blob) - 1))
            blob[pos] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            blob = blob[: draw(st.integers(0, len(blob)))]
        return bytes(blob)

    return st.one_of(
        st.binary(max_size=600).map(lambda b: b"SAIP\x02" + b),
        st.binary(max_size=600).map(lambda b: b"SAIP\x01\x01" + b),
        st.binary(max_size=300),
        mutated(),
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("prop")
    create_local_key(root / "k.key")
    create_local_key(root / "t.key")
    key, target = LocalKeyProvider(root / "k.key"), LocalKeyProvider(root / "t.key")
    return root, key, target, _samples(key)


@SETTINGS
@given(data=st.data())
def test_parse_and_read_header(setup, data) -> None:  # type: ignore[no-untyped-def]
    root, _, _, samples = setup
    blob = data.draw(_blobs(samples))
    for strict in (True, False):
        try:
            header = wire.parse_header(blob, strict=strict)
        except wire.MalformedError:
            continue
        assert header.payload_offset <= len(blob)
        assert header.version in wire.VERSIONS
    path = root / "h.saip"
    path.write_bytes(blob)
    for strict in (True, False):
        try:
            header = read_header(path, strict=strict)
        except wire.MalformedError:
            continue
        for key in header.wrapped_keys():
            assert wire.valid_key_id(key.provider, key.key_id)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_inspect_and_audit(setup, data, capsys) -> None:  # type: ignore[no-untyped-def]
    root, _, _, samples = setup
    blob = data.draw(_blobs(samples))
    folder = root / "audit"
    folder.mkdir(exist_ok=True)
    path = folder / "x.saip"
    path.write_bytes(blob)
    report = audit([folder])
    assert isinstance(report, AuditReport)
    assert report.scanned == 1
    for argv in (["inspect", str(path)], ["inspect", "--json", str(path)]):
        capsys.readouterr()
        rc = main(argv)
        captured = capsys.readouterr()
        assert rc in (0, 1)
        if rc == 1:
            assert captured.err.startswith("saip: error:")
            assert "[EncryptionConfigError]" in captured.err
        assert "\x1b" not in captured.out + captured.err
    assert main(["keys", "audit", str(folder)]) == 0


@SETTINGS
@given(data=st.data())
def test_rewrap(setup, data) -> None:  # type: ignore[no-untyped-def]
    root, key, target, samples = setup
    blob = data.draw(_blobs(samples))
    path = root / "r.saip"
    path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    try:
        out = rewrap_bytes(blob, unwrap_with=[key], wrap_with=[target])
    except (DecryptionError, KeyProviderError):
        pass
    else:
        assert len(out) >= len(blob) - 2 * 0xFFFF
    try:
        rewrap_file(path, unwrap_with=[key], wrap_with=[target])
    except (DecryptionError, KeyProviderError):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    except EncryptionConfigError:
        pytest.fail("no configuration problem here")

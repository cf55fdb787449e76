"""Adversarial review of encryption v2 (second pass): regression tests for what it found.

* a shared data-key cache must never hand one encryptor's epoch to another whose master keys
  merely *print* the same (an AWS alias or bare key ID names a different key per region,
  account or endpoint);
* the CLI can sign and verify headers (``--sign-with``/``--verify-with`` and the
  ``[encryption] sign_with``/``verify_with`` settings): a header signed by another KMS key, an
  unsigned one and a stripped signature are refused with exit 1 and no output file;
* ``open``/``open_many`` on edited records (a verified epoch header plus or minus bytes, spliced
  nonces, truncations) raise only the typed errors and never release part of a batch;
* downgrade: with ``verify_with`` configured, a v1 file (no signature field) or a v2 epoch whose
  signature was stripped is refused by every entry point, also right after the signed epoch was
  verified (the prefix match must not reach a header that differs only after ``A || C``);
* epoch caps hold under threads: concurrent sealers never put more than ``max_messages``
  records under one epoch key (the counters were checked and decremented without a lock).
"""

from __future__ import annotations

import collections
import io
import json
import shutil
import threading
import time
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip.cli import main
from saip_encryption import (
    DataKeyCache,
    DecryptionError,
    EncryptionConfigError,
    EnvelopeEncryptor,
    from_uri,
    wire,
)
from saip_encryption.errors import KeyProviderError
from saip_encryption.providers.local import LocalKeyProvider, create_local_key
from saip_encryption.rotation import rewrap_bytes, rewrap_file
from saip_encryption.signing import (
    AwsKmsSigner,
    HeaderVerifier,
    signer_from_uri,
    verifier_from_spec,
)

CTX = {"dataset": "d1", "tenant": "t1"}


def test_shared_cache_separates_same_alias_in_two_regions(moto_url: str) -> None:
    """Attack: two tenants' encryptors share one cache and both name ``alias/saip-data`` — in
    different regions (or accounts). Keyed by the URI text, tenant B's records were sealed under
    tenant A's epoch, i.e. wrapped only under A's KMS key: A's key holders could read B's data
    and B's own key could not."""
    arns = {}
    for region in ("us-east-1", "eu-west-1"):
        kms = boto3.client("kms", endpoint_url=moto_url, region_name=region)
        arns[region] = kms.create_key(Description=region)["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName="alias/saip-data", TargetKeyId=arns[region])
    shared = DataKeyCache()
    enc_a = EnvelopeEncryptor(
        from_uri("aws-kms:alias/saip-data", endpoint_url=moto_url, region="us-east-1"),
        cache=shared,
    )
    enc_b = EnvelopeEncryptor(
        from_uri("aws-kms:alias/saip-data", endpoint_url=moto_url, region="eu-west-1"),
        cache=shared,
    )
    enc_a.encrypt(b"a", context=CTX)
    b = enc_b.bind(CTX).seal_many([b"b1", b"b2"])
    assert wire.parse_header(b[0]).wrapped_keys()[0].key_id == arns["eu-west-1"]
    mine = EnvelopeEncryptor(from_uri(f"aws-kms:{arns['eu-west-1']}", endpoint_url=moto_url))
    assert mine.bind(CTX).open_many(b) == [b"b1", b"b2"]
    theirs = EnvelopeEncryptor(from_uri(f"aws-kms:{arns['us-east-1']}", endpoint_url=moto_url))
    with pytest.raises(DecryptionError):
        theirs.decrypt(b[0], context=CTX)


def test_cli_signs_and_verifies_headers(
    moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1")
    wrap = kms.create_key()["KeyMetadata"]["Arn"]
    sign, evil = (
        kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"]
        for _ in range(2)
    )
    pem = tmp_path / "signer.pem"
    pem.write_bytes(AwsKmsSigner(key_arn=sign, endpoint_url=moto_url).public_key_pem())
    capsys.readouterr()
    assert main(["keys", "public-key", f"aws-kms:{sign}", "--endpoint-url", moto_url]) == 0
    assert capsys.readouterr().out.encode() == pem.read_bytes()
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"weights" * 500)
    common = ["--key", f"aws-kms:{wrap}", "--endpoint-url", moto_url]
    verify = ["--verify-with", f"aws-kms:{sign}={pem}"]

    def encrypt(name: str, *extra: str) -> Path:
        out = tmp_path / name
        assert main(["encrypt", str(plain), str(out), *common, *extra]) == 0
        return out

    good = encrypt("good.saip", "--sign-with", f"aws-kms:{sign}", *verify)
    forged = encrypt("forged.saip", "--sign-with", f"aws-kms:{evil}")
    unsigned = encrypt("unsigned.saip")
    header = wire.parse_header(good.read_bytes())
    stripped = tmp_path / "stripped.saip"
    stripped.write_bytes(
        good.read_bytes()[: header.key_area_offset - len(header.signature_field)]
        + wire.encode_signature(None)
        + good.read_bytes()[header.key_area_offset :]
    )
    # attacks first: each is refused (exit 1) and leaves no output
    for bad in (forged, unsigned, stripped):
        out = tmp_path / f"{bad.stem}.out"
        assert main(["decrypt", str(bad), str(out), *common, *verify]) == 1
        assert not out.exists()
    # without a verifier the unsigned file still decrypts (symmetric wrap: key holders only)
    assert main(["decrypt", str(unsigned), str(tmp_path / "u.out"), *common]) == 0
    assert main(["decrypt", str(good), str(tmp_path / "g.out"), *common, *verify]) == 0
    assert (tmp_path / "g.out").read_bytes() == plain.read_bytes()
    # re-wrap applies the same policy: the forged file is not re-wrapped, the good one is
    before = forged.read_bytes()
    rewrap = ["keys", "rewrap", "--from", f"aws-kms:{wrap}", "--to", f"aws-kms:{wrap}"]
    assert main([*rewrap, str(forged), "--endpoint-url", moto_url, *verify]) == 1
    assert forged.read_bytes() == before
    assert main([*rewrap, str(good), "--endpoint-url", moto_url, *verify]) == 0
    # the same through the settings file
    cfg = tmp_path / "saip.toml"
    cfg.write_text(
        f'[encryption]\nkey = "aws-kms:{wrap}"\nsign_with = "aws-kms:{sign}"\n'
        f'verify_with = ["aws-kms:{sign}={pem}"]\n'
    )
    via_cfg = tmp_path / "cfg.saip"
    base = ["--config", str(cfg)]
    assert main([*base, "encrypt", str(plain), str(via_cfg), "--endpoint-url", moto_url]) == 0
    assert wire.parse_header(via_cfg.read_bytes()).signature is not None
    out = tmp_path / "cfg.out"
    assert main([*base, "decrypt", str(via_cfg), str(out), "--endpoint-url", moto_url]) == 0
    assert main([*base, "decrypt", str(unsigned), str(out) + "2", "--endpoint-url", moto_url]) == 1


@pytest.mark.parametrize(
    "spec",
    ["aws-kms:arn:aws:kms:us-east-1:1:key/x", "nocolon=f.pem", "aws-kms:k=/does/not/exist.pem"],
)
def test_verifier_spec_errors_are_typed(spec: str) -> None:
    with pytest.raises(EncryptionConfigError):
        verifier_from_spec(spec)


def test_signer_uri_errors_are_typed() -> None:
    for uri in ("local:/tmp/k", "gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k"):
        with pytest.raises(EncryptionConfigError):
            signer_from_uri(uri)


_BATCH: dict[str, object] = {}


def _warm_batch(tmp: Path) -> tuple[EnvelopeEncryptor, list[bytes]]:
    if not _BATCH:
        create_local_key(tmp / "k")
        enc = EnvelopeEncryptor(LocalKeyProvider(tmp / "k"))
        _BATCH.update(enc=enc, recs=enc.bind(CTX).seal_many([b"r" * i for i in range(4)]))
    return _BATCH["enc"], _BATCH["recs"]  # type: ignore[return-value]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    which=st.integers(0, 3),
    at=st.integers(0, 400),
    cut=st.integers(0, 8),
    insert=st.binary(max_size=16),
)
def test_edited_records_in_a_warm_batch_fail_typed_and_whole(
    tmp_path_factory: pytest.TempPathFactory, which: int, at: int, cut: int, insert: bytes
) -> None:
    enc, recs = _warm_batch(tmp_path_factory.getbasetemp())
    sealer = enc.bind(CTX)
    sealer.open_many(recs)  # the epoch is verified and hot: the prefix-match path is taken
    rec = recs[which]
    at = min(at, len(rec))
    edited = rec[:at] + insert + rec[at + cut :]
    if edited == rec:
        return
    for attempt in (
        lambda: sealer.open(edited),
        lambda: sealer.open_many([*recs[:which], edited, *recs[which + 1 :]]),
        lambda: enc.decrypt(edited, context=CTX),
    ):
        with pytest.raises((DecryptionError, KeyProviderError)):
            attempt()


@pytest.mark.parametrize("api", ["encrypt", "seal", "seal_many"])
def test_epoch_message_cap_holds_under_threads(tmp_path: Path, api: str) -> None:
    create_local_key(tmp_path / "k")

    def yielding_clock() -> float:
        time.sleep(0.0001)  # a thread switch inside the cap check: the race made deterministic
        return time.monotonic()

    cache = DataKeyCache(max_messages=50, clock=yielding_clock)
    enc = EnvelopeEncryptor(LocalKeyProvider(tmp_path / "k"), cache=cache)
    headers: list[bytes] = []
    cut = len(enc.encrypt(b"", context=CTX)) - wire.NONCE_LEN - wire.TAG_LEN

    def work() -> None:
        sealer = enc.bind(CTX)
        mine = []
        for _ in range(150):
            if api == "encrypt":
                mine.append(enc.encrypt(b"x", context=CTX)[:cut])
            elif api == "seal":
                mine.append(sealer.seal(b"x")[:cut])
            else:
                mine += [r[:cut] for r in sealer.seal_many([b"x"] * 7)]
        headers.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_epoch = collections.Counter(headers)
    assert max(per_epoch.values()) <= 50


def _strip_signature(blob: bytes) -> bytes:
    header = wire.parse_header(blob)
    start = header.key_area_offset - len(header.signature_field)
    return blob[:start] + wire.encode_signature(None) + blob[header.key_area_offset :]


def test_downgrade_to_v1_or_unsigned_is_refused_everywhere(
    tmp_path: Path, azure_signing: tuple[object, object]
) -> None:
    signer, verifier = azure_signing
    data = Path(__file__).with_name("data")
    work = tmp_path / "v1"
    shutil.copytree(data, work)
    (work / "v1-local.key").chmod(0o600)
    v1_ctx = json.loads((work / "v1-context.json").read_text())
    key = LocalKeyProvider(work / "v1-local.key")
    strict = EnvelopeEncryptor(key, verify_with=[verifier])  # type: ignore[list-item]
    signed = EnvelopeEncryptor(key, signer=signer, verify_with=[verifier])  # type: ignore[arg-type,list-item]
    sealer = strict.bind(CTX)
    good = signed.bind(CTX).seal_many([b"a", b"b"])
    assert sealer.open_many(good) == [b"a", b"b"]  # the signed epoch is now verified and hot
    unsigned = [_strip_signature(r) for r in good]
    v1_record = (work / "v1-local-record.saip").read_bytes()
    v1_artifact = work / "v1-local-artifact.saip"
    refused = [
        lambda: sealer.open(unsigned[0]),
        lambda: sealer.open_many([good[0], unsigned[1]]),
        lambda: strict.decrypt(unsigned[1], context=CTX),
        lambda: strict.decrypt(v1_record, context=v1_ctx),
        lambda: strict.bind(v1_ctx).open_many([v1_record]),
        lambda: strict.decrypt_stream(
            io.BytesIO(v1_artifact.read_bytes()), io.BytesIO(), context=v1_ctx
        ),
        lambda: rewrap_bytes(
            unsigned[0],
            unwrap_with=[key],
            wrap_with=[key],
            verify_with=[verifier],  # type: ignore[list-item]
        ),
        lambda: rewrap_file(
            v1_artifact,
            unwrap_with=[key],
            wrap_with=[key],
            verify_with=[verifier],  # type: ignore[list-item]
        ),
    ]
    before = v1_artifact.read_bytes()
    for attempt in refused:
        with pytest.raises(DecryptionError):
            attempt()
    assert v1_artifact.read_bytes() == before
    # the same files without the policy: still readable (v1 compatibility)
    assert EnvelopeEncryptor(key).decrypt(v1_record, context=v1_ctx)
    assert EnvelopeEncryptor(key).bind(CTX).open_many(unsigned) == [b"a", b"b"]


def test_signer_from_uri_builds_a_gcp_signer_like_the_provider(fake_gcp_kms: object) -> None:
    """``--sign-with gcp-kms:...`` goes through the provider's own client construction (here:
    ``--endpoint-url http://`` to the labelled fake Cloud KMS server on loopback)."""
    name = "projects/p/locations/global/keyRings/r/cryptoKeys/sig/cryptoKeyVersions/1"
    with fake_gcp_kms.serve() as running:  # type: ignore[attr-defined]
        running.fake.add_signing_key(name)
        signer = signer_from_uri(f"gcp-kms:{name}", endpoint_url=f"http://{running.target}")
        pem = signer.public_key_pem()  # type: ignore[attr-defined]
        message = wire.signed_message(b"A", b"C" * 32)
        sig = wire.HeaderSignature("gcp-kms", name, signer.sign(message))
        verifier = HeaderVerifier(scheme="gcp-kms", key_id=name, public_key=pem)
        assert verifier.verify(sig, b"A", b"C" * 32)
        assert not verifier.verify(sig, b"B", b"C" * 32)


def test_public_key_of_an_unknown_algorithm_is_a_config_error(tmp_path: Path) -> None:
    """A pinned key whose algorithm OID cryptography does not know raised ``UnsupportedAlgorithm``
    (untyped) instead of the configuration error naming the key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ec_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
    assert ec_oid in der
    unknown = der.replace(ec_oid, ec_oid[:-1] + b"\x7f")
    with pytest.raises(EncryptionConfigError):
        HeaderVerifier(scheme="aws-kms", key_id="arn:aws:kms:us-east-1:1:key/k", public_key=unknown)
    (tmp_path / "k.der").write_bytes(unknown)
    with pytest.raises(EncryptionConfigError):
        verifier_from_spec(f"aws-kms:arn:aws:kms:us-east-1:1:key/k={tmp_path / 'k.der'}")


class _HostileWrapper:
    """FAKE provider (tests only): writes a wrapped key whose Key Vault key ID is a URL that
    ``urlsplit`` rejects (an unbalanced IPv6 bracket) but that passes the key-ID grammar."""

    uri = "fake:hostile"

    def wrap(self, data_key: bytes | bytearray, *, context: object) -> object:
        from saip_encryption.providers.base import WrappedKey

        return WrappedKey("azure-kv", "https://[v.vault.azure.net/keys/k/1", b"junk")


@pytest.mark.parametrize("algorithm", ["A256KW", "RSA-OAEP-256"])
def test_hostile_key_vault_key_id_is_the_typed_error(tmp_path: Path, algorithm: str) -> None:
    """Attack: a header whose azure-kv key ID makes ``urlsplit`` raise ``ValueError``. The
    operator's Key Vault provider checked it with ``accepts`` outside any handler: decrypt hid it
    behind the opaque error by luck (``ValueError`` is caught there), but ``rewrap_bytes``,
    ``rewrap_file`` and ``saip keys rewrap`` crashed with an untyped ``ValueError``."""
    from saip_encryption.providers import azure

    create_local_key(tmp_path / "k")
    local = LocalKeyProvider(tmp_path / "k")
    blob = EnvelopeEncryptor(local).encrypt(b"x", context=CTX)
    hostile = rewrap_bytes(blob, unwrap_with=[local], wrap_with=[_HostileWrapper()])  # type: ignore[list-item]
    path = tmp_path / "hostile.saip"
    path.write_bytes(hostile)
    vault = azure.AzureKeyVaultProvider(
        key_id="https://v.vault.azure.net/keys/k", algorithm=algorithm, client_for_version=str
    )
    policy = {"allow_unsigned_public_key_wraps": True}
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(vault, **policy).decrypt(hostile, context=CTX)  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        rewrap_bytes(hostile, unwrap_with=[vault], wrap_with=[local], **policy)  # type: ignore[arg-type]
    for allow in (True, False):
        with pytest.raises(DecryptionError):
            rewrap_file(
                path, unwrap_with=[vault], wrap_with=[local], allow_unsigned_public_key_wraps=allow
            )
    assert path.read_bytes() == hostile
    with pytest.raises(EncryptionConfigError):
        azure.parse_key_id("https://[v.vault.azure.net/keys/k/1")


class _FakePublicKeyClient:
    """FAKE Cloud KMS client (tests only): answers ``get_public_key`` with a chosen PEM text."""

    def __init__(self, pem: str) -> None:
        self.pem = pem

    def get_public_key(self, request: dict[str, str]) -> object:
        return type("PublicKey", (), {"pem": self.pem})()


@pytest.mark.parametrize(
    "pem",
    ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"],
)
def test_gcp_public_key_of_a_malformed_pem_is_a_config_error(pem: str) -> None:
    """A key service (or whoever answers in its place) returning a malformed PEM gives the typed
    configuration error naming the key, not a ``ValueError`` from the parser."""
    from saip_encryption.errors import EncryptionConfigError
    from saip_encryption.signing import GcpKmsSigner

    name = "projects/p/locations/global/keyRings/r/cryptoKeys/sig/cryptoKeyVersions/1"
    signer = GcpKmsSigner(version_name=name, client=_FakePublicKeyClient(pem))
    with pytest.raises(EncryptionConfigError, match="unreadable public key"):
        signer.public_key_pem()

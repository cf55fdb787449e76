"""Envelope encryption benchmark: saip against its anchors, side by side in one process.

Anchors (all on one core, same inputs, interleaved round-robin so machine load hits all alike):

* ``raw_aesgcm`` — pyca/cryptography ``AESGCM`` with ONE key and a random 96-bit nonce per record
  (records), ``readinto`` + ``encrypt_into``/``decrypt_into`` with reused buffers (artifacts).
  The floor: no key management, no header, nothing to authenticate but the payload.
* ``tink_aead`` — Tink AES256_GCM AEAD (one key).
* ``tink_envelope`` — Tink ``KmsEnvelopeAead`` (new AES256_GCM DEK per message). Its "KMS" is an
  in-memory Tink AES256_GCM AEAD standing in for the remote key (no network), which is the most
  favourable setting for Tink; saip likewise uses its local key provider.
* ``tink_streaming`` — Tink streaming AEAD, AES256_GCM_HKDF_1MB.
* ``esdk`` — AWS Encryption SDK 4 in its fastest honest configuration: committing suite
  without signature (``AES_256_GCM_HKDF_SHA512_COMMIT_KEY``), a caching CMM
  (``LocalCryptoMaterialsCache``) over a raw AES-256-GCM master key; artifacts with 1 MiB
  frames via ``EncryptionSDKClient.stream``.
* ``saip`` — :class:`saip_encryption.EnvelopeEncryptor` over a ``local:`` key with the default
  data-key cache (records: format v2 epoch records through ``encrypt``/``decrypt``) and 1 MiB
  segments (artifacts).
* ``saip_batch64`` / ``raw_aesgcm_batch64`` — batches of 64 records: saip's bound-context API
  (``enc.bind(ctx).seal_many`` then ``open_many``) against a batched raw loop (one ``urandom``
  call per batch for the 64 nonces, ``nonce || ciphertext`` out, then 64 decrypts).

Metrics (JSON keys as in issue 3): records/s for 1 KiB records (encrypt then decrypt each);
artifact MB/s (10^6 bytes) per direction, input read from a page-cached file and output written
to a discarding sink; saip's peak RSS over its import baseline (measured in a child process);
re-wrap of an artifact vs a full decrypt + re-encrypt. Every figure is the median of the repeats.
Throughputs divide the work by this process's CPU time (``time.process_time``: user + sys), which
other jobs on the shared machine do not inflate; wall-clock medians are kept under ``*_wall``.

Usage: ``python benchmarks/encryption.py [--quick] [--out benchmarks/results/encryption.json]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MB = 1e6
RECORD = 1024
CTX = {"dataset": "bench", "tenant": "acme", "purpose": "training"}


class NullSink(io.RawIOBase):
    """Discards writes (measures crypto, not the disk)."""

    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = len(b) if not isinstance(b, memoryview) else b.nbytes
        self.n += n
        return n

    def close(self) -> None:  # Tink closes its destination; keep the sink usable
        pass


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


def record_impls(key_uri: str) -> dict[str, Callable[[bytes], bytes]]:
    """name -> f(plaintext) doing encrypt + decrypt, returning the plaintext."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from saip_encryption import EnvelopeEncryptor, from_uri

    impls: dict[str, Callable[[bytes], bytes]] = {}

    raw = AESGCM(AESGCM.generate_key(bit_length=256))
    urandom = os.urandom

    def raw_rt(pt: bytes) -> bytes:
        nonce = urandom(12)
        return raw.decrypt(nonce, raw.encrypt(nonce, pt, None), None)

    impls["raw_aesgcm"] = raw_rt

    import tink
    from tink import aead

    aead.register()
    t_aead = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    impls["tink_aead"] = lambda pt: t_aead.decrypt(t_aead.encrypt(pt, b""), b"")
    kek = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    t_env = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, kek)
    impls["tink_envelope"] = lambda pt: t_env.decrypt(t_env.encrypt(pt, b"ctx"), b"ctx")

    client, cmm, alg = esdk_setup(cache=True)

    def esdk_rt(pt: bytes) -> bytes:
        ct, _ = client.encrypt(
            source=pt, materials_manager=cmm, algorithm=alg, encryption_context=CTX
        )
        out, _ = client.decrypt(source=ct, materials_manager=cmm)
        return bytes(out)

    impls["esdk"] = esdk_rt

    enc = EnvelopeEncryptor(from_uri(key_uri))
    impls["saip"] = lambda pt: enc.decrypt(enc.encrypt(pt, context=CTX), context=CTX)
    return impls


BATCH = 64


def batch_impls(key_uri: str) -> dict[str, Callable[[list[bytes]], list[bytes]]]:
    """name -> f(64 plaintexts) doing encrypt + decrypt of the batch, returning the plaintexts."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from saip_encryption import EnvelopeEncryptor, from_uri

    raw = AESGCM(AESGCM.generate_key(bit_length=256))
    urandom = os.urandom

    def raw_batch(pts: list[bytes]) -> list[bytes]:
        nonces = urandom(12 * len(pts))
        enc, dec = raw.encrypt, raw.decrypt
        cts = [
            n + enc(n, pt, None)
            for n, pt in zip(
                [nonces[i : i + 12] for i in range(0, 12 * len(pts), 12)], pts, strict=True
            )
        ]
        return [dec(c[:12], c[12:], None) for c in cts]

    sealer = EnvelopeEncryptor(from_uri(key_uri)).bind(CTX)
    return {
        "raw_aesgcm_batch64": raw_batch,
        "saip_batch64": lambda pts: sealer.open_many(sealer.seal_many(pts)),
    }


def esdk_setup(*, cache: bool) -> tuple[Any, Any, Any]:
    import aws_encryption_sdk
    from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
    from aws_encryption_sdk.identifiers import (
        Algorithm,
        CommitmentPolicy,
        EncryptionKeyType,
        WrappingAlgorithm,
    )
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey
    from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager

    master = RawMasterKey(
        provider_id="bench",
        key_id=b"bench-key",
        wrapping_key=WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=os.urandom(32),
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        ),
    )
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    cmm: Any = master
    if cache:
        cmm = CachingCryptoMaterialsManager(
            master_key_provider=master,
            cache=LocalCryptoMaterialsCache(capacity=100),
            max_age=300.0,
            max_messages_encrypted=1 << 20,
        )
    return client, cmm, Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY


def bench_records(key_uri: str, *, n: int, repeats: int) -> dict[str, Any]:
    impls = record_impls(key_uri)
    batches = batch_impls(key_uri)
    scale = {"esdk": 0.1, "tink_envelope": 0.5}
    records = [os.urandom(RECORD) for _ in range(BATCH)]
    names = [*impls, *batches]
    samples: dict[str, list[float]] = {name: [] for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    for fn in impls.values():  # correctness, then warm-up: >= 1,000 records each
        for r in records[:4]:
            assert fn(r) == r
        for i in range(1000):
            fn(records[i & 63])
    for bfn in batches.values():
        assert bfn(records) == records
        for _ in range(1000 // BATCH + 1):
            bfn(records)
    for _ in range(repeats):  # interleaved round-robin
        for name, fn in impls.items():
            count = max(200, int(n * scale.get(name, 1.0)))
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(count):
                fn(records[i & 63])
            samples[name].append(count / (time.process_time() - cpu))
            wall[name].append(count / (time.perf_counter() - start))
        for name, bfn in batches.items():
            rounds = max(4, n // BATCH)
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(rounds):
                bfn(records)
            samples[name].append(rounds * BATCH / (time.process_time() - cpu))
            wall[name].append(rounds * BATCH / (time.perf_counter() - start))
    return {
        "rec_per_s": {k: round(statistics.median(v), 1) for k, v in samples.items()},
        "samples": {k: [round(x, 1) for x in v] for k, v in samples.items()},
        "rec_per_s_wall": {k: round(statistics.median(v), 1) for k, v in wall.items()},
        "record_bytes": RECORD,
    }


# ---------------------------------------------------------------------------------------------
# artifacts
# ---------------------------------------------------------------------------------------------

CHUNK = 1 << 20


def _read_full(src: Any, mv: memoryview) -> int:
    total = 0
    while total < len(mv):
        n = src.readinto(mv[total:])
        if not n:
            break
        total += n
    return total


def artifact_impls(key_uri: str) -> dict[str, tuple[Callable[..., object], Callable[..., object]]]:
    """name -> (encrypt(src, dst), decrypt(src, dst))."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from saip_encryption import EnvelopeEncryptor, from_uri

    key = AESGCM(AESGCM.generate_key(bit_length=256))

    def raw_enc(src: Any, dst: Any) -> None:
        inbuf, outbuf = bytearray(CHUNK), bytearray(CHUNK + 16)
        inv, outv = memoryview(inbuf), memoryview(outbuf)
        i = 0
        while True:
            n = _read_full(src, inv)
            key.encrypt_into(i.to_bytes(12, "big"), inv[:n], None, outv[: n + 16])
            dst.write(outv[: n + 16])
            i += 1
            if n < CHUNK:
                return

    def raw_dec(src: Any, dst: Any) -> None:
        inbuf, outbuf = bytearray(CHUNK + 16), bytearray(CHUNK)
        inv, outv = memoryview(inbuf), memoryview(outbuf)
        i = 0
        while True:
            n = _read_full(src, inv)
            key.decrypt_into(i.to_bytes(12, "big"), inv[:n], None, outv[: n - 16])
            dst.write(outv[: n - 16])
            i += 1
            if n < CHUNK + 16:
                return

    import tink
    from tink import streaming_aead

    streaming_aead.register()
    t_stream = tink.new_keyset_handle(
        streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB
    ).primitive(streaming_aead.StreamingAead)

    def tink_enc(src: Any, dst: Any) -> None:
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        with t_stream.new_encrypting_stream(dst, b"aad") as es:
            while n := _read_full(src, mv):
                es.write(mv[:n])

    def tink_dec(src: Any, dst: Any) -> None:
        with t_stream.new_decrypting_stream(src, b"aad") as ds:
            while data := ds.read(CHUNK):
                dst.write(data)

    client, master, alg = esdk_setup(cache=False)

    def esdk_enc(src: Any, dst: Any) -> None:
        with client.stream(
            mode="e",
            source=src,
            key_provider=master,
            algorithm=alg,
            frame_length=CHUNK,
            encryption_context=CTX,
        ) as stream:
            for chunk in stream:
                dst.write(chunk)

    def esdk_dec(src: Any, dst: Any) -> None:
        with client.stream(mode="d", source=src, key_provider=master) as stream:
            for chunk in stream:
                dst.write(chunk)

    enc = EnvelopeEncryptor(from_uri(key_uri))
    return {
        "raw_aesgcm": (raw_enc, raw_dec),
        "tink_streaming": (tink_enc, tink_dec),
        "esdk": (esdk_enc, esdk_dec),
        "saip": (
            lambda s, d: enc.encrypt_stream(s, d, context=CTX),
            lambda s, d: enc.decrypt_stream(s, d, context=CTX),
        ),
    }


def bench_artifacts(key_uri: str, workdir: Path, *, size: int, repeats: int) -> dict[str, Any]:
    plain = workdir / "plain.bin"
    with open(plain, "wb") as fh:
        block = os.urandom(CHUNK)
        for _ in range(size // CHUNK):
            fh.write(block)
    impls = artifact_impls(key_uri)
    cipher: dict[str, Path] = {}
    for name, (enc, dec) in impls.items():  # produce ciphertexts, check the round trip
        cipher[name] = workdir / f"{name}.ct"
        with open(plain, "rb") as src, open(cipher[name], "wb") as dst:
            enc(src, dst)
        sink = NullSink()
        with open(cipher[name], "rb") as src:
            dec(src, sink)
        assert sink.n == size, (name, sink.n)
    enc_s: dict[str, list[float]] = {n: [] for n in impls}
    dec_s: dict[str, list[float]] = {n: [] for n in impls}
    enc_w: dict[str, list[float]] = {n: [] for n in impls}
    dec_w: dict[str, list[float]] = {n: [] for n in impls}
    for _ in range(repeats):
        for name, (enc, dec) in impls.items():
            for fn, path, cpu_out, wall_out in (
                (enc, plain, enc_s, enc_w),
                (dec, cipher[name], dec_s, dec_w),
            ):
                with open(path, "rb", buffering=0) as src:
                    start, cpu = time.perf_counter(), time.process_time()
                    fn(src, NullSink())
                    cpu_out[name].append(size / MB / (time.process_time() - cpu))
                    wall_out[name].append(size / MB / (time.perf_counter() - start))
    for name in impls:
        if name != "saip":
            cipher[name].unlink()
    return {
        "bytes": size,
        "encrypt_mb_s": {k: round(statistics.median(v), 1) for k, v in enc_s.items()},
        "decrypt_mb_s": {k: round(statistics.median(v), 1) for k, v in dec_s.items()},
        "samples": {
            "encrypt_mb_s": {k: [round(x, 1) for x in v] for k, v in enc_s.items()},
            "decrypt_mb_s": {k: [round(x, 1) for x in v] for k, v in dec_s.items()},
        },
        "encrypt_mb_s_wall": {k: round(statistics.median(v), 1) for k, v in enc_w.items()},
        "decrypt_mb_s_wall": {k: round(statistics.median(v), 1) for k, v in dec_w.items()},
        "_plain": str(plain),
        "_saip": str(cipher["saip"]),
    }


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(key_uri: str, plain: str, out: str) -> None:
    """Child process: peak RSS during encrypt + decrypt over the RSS right after import.

    The kernel's peak-RSS mark (VmHWM) is reset after the imports by writing 5 to
    ``/proc/self/clear_refs`` (Linux >= 4.0), so the import's own peak does not hide the work's.
    """
    from saip_encryption import EnvelopeEncryptor, from_uri

    enc = EnvelopeEncryptor(from_uri(key_uri))
    base_kib = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    with open(plain, "rb") as src, open(out, "wb") as dst:
        enc.encrypt_stream(src, dst, context=CTX)
    with open(out, "rb") as src:
        enc.decrypt_stream(src, NullSink(), context=CTX)
    peak_kib = _status_kib("VmHWM")
    print(json.dumps({"baseline_mb": base_kib / 1024, "peak_mb": peak_kib / 1024}))


def bench_rss(key_uri: str, plain: str, workdir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", key_uri, plain, str(workdir / "rss.ct")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (workdir / "rss.ct").unlink()
    data = json.loads(out)
    return {k: round(v, 2) for k, v in data.items()}


def bench_rewrap(
    key_a: str, key_b: str, artifact: str, workdir: Path, *, repeats: int
) -> dict[str, Any]:
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.rotation import rewrap_file

    a, b = from_uri(key_a), from_uri(key_b)
    rewrap_times = []
    for i in range(max(repeats, 5)):
        old_key, new_key = (a, b) if i % 2 == 0 else (b, a)
        start = time.perf_counter()
        result = rewrap_file(artifact, unwrap_with=[old_key], wrap_with=[new_key])
        rewrap_times.append(time.perf_counter() - start)
        assert result.in_place
    reencrypt_times = []
    dec, enc = EnvelopeEncryptor(a), EnvelopeEncryptor(b)
    current = dec if len(rewrap_times) % 2 == 0 else enc
    for _ in range(repeats):
        out = workdir / "reencrypted.ct"
        start = time.perf_counter()
        with open(artifact, "rb") as src, open(out, "wb") as dst:
            # decrypt to a temporary file (authenticate everything first), then re-encrypt
            tmp = workdir / "reencrypt.plain"
            with open(tmp, "wb") as mid:
                current.decrypt_stream(src, mid, context=CTX)
            with open(tmp, "rb") as mid:
                enc.encrypt_stream(mid, dst, context=CTX)
        reencrypt_times.append(time.perf_counter() - start)
        tmp.unlink()
        out.unlink()
    return {
        "artifact_bytes": os.path.getsize(artifact),
        "saip_seconds": round(statistics.median(rewrap_times), 5),
        "full_reencrypt_seconds": round(statistics.median(reencrypt_times), 4),
        "samples": {
            "saip_seconds": [round(x, 5) for x in rewrap_times],
            "full_reencrypt_seconds": [round(x, 4) for x in reencrypt_times],
        },
        "method": "saip: rewrap_file in place (new key slot + 2 fsyncs); full: decrypt_stream to "
        "a temporary file, then encrypt_stream under the new key to a new file",
    }


def _paired(samples: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of a/b measured in the same round (robust to load drifting)."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))


def goals(result: dict[str, Any]) -> dict[str, Any]:
    rec = result["small_records"]["rec_per_s"]
    rec_s = result["small_records"]["samples"]
    art = result["artifact"]
    enc_s, dec_s = art["samples"]["encrypt_mb_s"], art["samples"]["decrypt_mb_s"]
    rw = result["rewrap"]

    def row(value: float, op: str, target: float, paired: float | None = None) -> dict[str, Any]:
        met = value >= target if op == ">=" else value <= target
        out: dict[str, Any] = {"value": round(value, 3), "goal": f"{op} {target}", "met": bool(met)}
        if paired is not None:
            out["paired_median"] = round(paired, 3)
        return out

    return {
        "records_vs_raw_floor": row(
            rec["saip"] / rec["raw_aesgcm"], ">=", 0.5, _paired(rec_s, "saip", "raw_aesgcm")
        ),
        "records_batch64_vs_raw_batch64": row(
            rec["saip_batch64"] / rec["raw_aesgcm_batch64"],
            ">=",
            0.8,
            _paired(rec_s, "saip_batch64", "raw_aesgcm_batch64"),
        ),
        "records_vs_esdk": row(rec["saip"] / rec["esdk"], ">=", 30, _paired(rec_s, "saip", "esdk")),
        "records_vs_tink_envelope": row(
            rec["saip"] / rec["tink_envelope"], ">=", 1.0, _paired(rec_s, "saip", "tink_envelope")
        ),
        "artifact_encrypt_vs_raw_floor": row(
            art["encrypt_mb_s"]["saip"] / art["encrypt_mb_s"]["raw_aesgcm"],
            ">=",
            0.75,
            _paired(enc_s, "saip", "raw_aesgcm"),
        ),
        "artifact_decrypt_vs_raw_floor": row(
            art["decrypt_mb_s"]["saip"] / art["decrypt_mb_s"]["raw_aesgcm"],
            ">=",
            0.75,
            _paired(dec_s, "saip", "raw_aesgcm"),
        ),
        "artifact_encrypt_vs_tink_streaming": row(
            art["encrypt_mb_s"]["saip"] / art["encrypt_mb_s"]["tink_streaming"],
            ">=",
            1.5,
            _paired(enc_s, "saip", "tink_streaming"),
        ),
        "artifact_decrypt_vs_tink_streaming": row(
            art["decrypt_mb_s"]["saip"] / art["decrypt_mb_s"]["tink_streaming"],
            ">=",
            1.5,
            _paired(dec_s, "saip", "tink_streaming"),
        ),
        "peak_rss_over_baseline_mb": row(art["saip_peak_rss_over_baseline_mb"], "<=", 16),
        "rewrap_vs_full_reencrypt": row(
            rw["saip_seconds"] / rw["full_reencrypt_seconds"], "<=", 0.02
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 minute)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "encryption.json")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    n, repeats, size = (3000, 5, 32 << 20) if args.quick else (20000, 7, 256 << 20)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="saip-bench-") as tmp:
        work = Path(tmp)
        from saip_encryption.providers.local import create_local_key

        create_local_key(work / "a.key")
        create_local_key(work / "b.key")
        key_a, key_b = f"local:{work / 'a.key'}", f"local:{work / 'b.key'}"
        print(f"records: {n} x {repeats} repeats ...", file=sys.stderr)
        records = bench_records(key_a, n=n, repeats=repeats)
        print(f"artifacts: {size >> 20} MiB x {repeats} repeats ...", file=sys.stderr)
        artifact = bench_artifacts(key_a, work, size=size, repeats=repeats)
        plain, saip_ct = artifact.pop("_plain"), artifact.pop("_saip")
        rss = bench_rss(key_a, plain, work)
        artifact["saip_peak_rss_over_baseline_mb"] = round(rss["peak_mb"] - rss["baseline_mb"], 2)
        artifact["saip_rss_mb"] = rss
        print("rewrap ...", file=sys.stderr)
        rewrap = bench_rewrap(key_a, key_b, saip_ct, work, repeats=min(repeats, 3))
    import aws_encryption_sdk
    import cryptography
    import tink

    result: dict[str, Any] = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "versions": {
                "cryptography": cryptography.__version__,
                "tink": getattr(tink, "__version__", "1.16"),
                "aws-encryption-sdk": aws_encryption_sdk.__version__,
            },
            "units": "rec/s = 1 KiB records encrypted then decrypted; MB = 10^6 bytes; medians",
            "seconds": round(time.perf_counter() - started, 1),
            "notes": [
                "tink_envelope's KEK is an in-memory Tink AES256_GCM AEAD (no KMS round trip)",
                "esdk: AES_256_GCM_HKDF_SHA512_COMMIT_KEY (no signature), caching CMM over a "
                "raw AES-256-GCM master key for records; 1 MiB frames for artifacts",
                "saip: local: key, default data-key cache, format v2 epoch records (records), "
                "1 MiB segments (artifacts); every implementation warmed with >= 1,000 records",
                "tink_envelope makes a fresh DEK per record (one KEK wrap + unwrap each); saip "
                "reuses one data key per epoch (cache caps), so the comparison favours saip by "
                "design: it shows the cost of per-record key management, not two equal designs",
                "throughputs divide the work by this process's CPU time (user+sys, "
                "time.process_time) so that other jobs on the shared 2-core machine do not "
                "distort them; wall-clock medians are in *_wall; rewrap times are wall-clock "
                "(they are dominated by fsync)",
                "implementations are interleaved "
                "round-robin; goals[*].value = ratio of medians, paired_median = median of "
                "per-round ratios (more robust to load changes)",
            ],
        },
        "small_records": records,
        "artifact": artifact,
        "rewrap": rewrap,
    }
    result["goals"] = goals(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, g in result["goals"].items():
        paired = f" paired {g['paired_median']}" if "paired_median" in g else ""
        verdict = "met" if g["met"] else "MISSED"
        print(f"{name:38s} {g['value']:>9} (goal {g['goal']}) {verdict}{paired}")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

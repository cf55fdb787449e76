"""``saip ingest``: produce signed records, ingest them, manage the quarantine, export a dataset.

See ``ingestion/README.md`` and ``docs/ingestion-format.md``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from saip.context import get_state
from saip.errors import InputError
from saip.gate_formats import JunitOpt, SarifOpt, ingest_findings, write_gate_files
from saip.outputs import atomic_output, require_input, require_output

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
        "--key",
        help="Master key URI (default: config, else a local key under $SAIP_KEY_DIR or "
        "~/.config/saip/keys, never inside the data directory).",
    ),
]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="Service endpoint (private/VPC endpoint).")
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Cloud region.")]
StreamOpt = Annotated[str | None, typer.Option("--stream", help="Stream / topic / event hub name.")]
BucketOpt = Annotated[str | None, typer.Option("--bucket", help="Bucket / container / dataset.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]


def _data_dir() -> Path:
    return get_state().data_dir


def _encryptor(key: str | None, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """The envelope encryptor for ``key`` (the default local key, outside the data directory,
    is created on first use: see ``saip.compose.resolve_key_uri``)."""
    from saip.compose import encryptor, resolve_key_uri

    state = get_state()
    if key is None and state.config.encryption.key is None:
        key = resolve_key_uri(None, configured=None, data_dir=state.data_dir, console=state.console)
    return encryptor(state, key, endpoint_url=endpoint_url, region=region)


def _backend(
    backend: str | None,
    endpoint_url: str | None,
    region: str | None,
    stream: str | None,
    bucket: str | None,
    **scale_out: Any,
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
    options.update(scale_out)
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
    force: ForceOpt = False,
) -> None:
    """Reference producer: sign dataset samples (key pair created and registered on first use)."""
    truth_out = out.with_name(out.name + ".truth.json")
    require_output(out, force=force)
    require_output(truth_out, force=force, what="truth file")
    from saip_ingestion.producer import parse_poison, produce

    state = get_state()
    specs = [parse_poison(p) for p in poison or []]
    shard_spec = _parse_shard(shard)
    # Both files are produced privately and moved into place only once complete (0600).
    with (
        atomic_output(out, force=force) as tmp,
        atomic_output(truth_out, force=force, what="truth file") as truth_tmp,
    ):
        result = produce(
            data_dir=state.data_dir,
            producer=producer,
            dataset=dataset,
            out=tmp,
            poison=specs,
            shard=shard_spec,
            limit=limit,
            tree_size=tree_size,
            seed=seed,
        )
        os.replace(result.truth_path, truth_tmp)
    doc = {
        "path": str(out),
        "truth": str(truth_out),
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
            f"{result.poisoned} poisoned, {result.invalid} invalid; truth in {truth_out})"
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


def _parse_pair(value: str, option: str, sep: str, kind: type) -> tuple[Any, Any]:
    parts = value.split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return kind(parts[0]), kind(parts[1])
    except ValueError:
        raise typer.BadParameter(f"{option} must look like A{sep}B, got {value!r}") from None


def _parse_classes(value: str | None) -> frozenset[int] | None:
    """``0-9`` or ``0,1,5``."""
    if value is None:
        return None
    try:
        if re.fullmatch(r"\d+-\d+", value):
            lo, hi = (int(x) for x in value.split("-"))
            out = frozenset(range(lo, hi + 1))
        else:
            out = frozenset(int(x) for x in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"--classes must look like 0-9 or 0,1,5, got {value!r}") from None
    if not out:
        raise typer.BadParameter("--classes is empty")
    return out


def _specs(
    dataset: str | None,
    image_shape: str | None,
    value_range: str | None,
    classes: str | None,
    columns: str | None,
) -> tuple[Any, Any]:
    """The declared content specs: a built-in dataset, or an image/tabular spec from options."""
    from saip_ingestion.engine import DATASET_SPECS, ImageSpec, TabularSpec

    lo_hi = _parse_pair(value_range, "--value-range", ",", float) if value_range else None
    class_set = _parse_classes(classes)
    if image_shape is not None:
        if dataset is not None:
            raise typer.BadParameter("give --dataset or --image-shape, not both")
        if lo_hi is None:
            raise typer.BadParameter("--image-shape needs --value-range LO,HI")
        w, h = _parse_pair(image_shape, "--image-shape", "x", int)
        try:
            image = ImageSpec(w, h, lo_hi[0], lo_hi[1], class_set or frozenset(range(10)))
        except ValueError as exc:
            raise typer.BadParameter(f"invalid image spec: {exc}") from None
    else:
        name = dataset or "digits"
        if name not in DATASET_SPECS:
            raise typer.BadParameter(f"--dataset must be one of {', '.join(DATASET_SPECS)}")
        image = DATASET_SPECS[name]
    tabular = TabularSpec(
        columns=frozenset(c for c in columns.split(",") if c) if columns else None,
        value_min=lo_hi[0] if lo_hi and image_shape is None else None,
        value_max=lo_hi[1] if lo_hi and image_shape is None else None,
        classes=class_set if image_shape is None else None,
    )
    return image, tabular


DatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", help="Built-in image spec: digits|mnist (default digits)."),
]
ImageShapeOpt = Annotated[
    str | None,
    typer.Option("--image-shape", help="Declared image spec WxH, e.g. 28x28 (with --value-range)."),
]
ValueRangeOpt = Annotated[
    str | None,
    typer.Option(
        "--value-range", help="LO,HI of feature values (image spec, or tabular without it)."
    ),
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", help="Label set, e.g. 0-9 or 0,1,5 (default 0-9).")
]
ColumnsOpt = Annotated[
    str | None, typer.Option("--columns", help="Tabular spec: the exact column set, a,b,c.")
]


@app.command("run")
def run_cmd(
    source: Annotated[
        list[str],
        typer.Option("--source", help="A JSONL FILE (repeatable, read in order), or 'stream'."),
    ],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    dataset: DatasetOpt = None,
    image_shape: ImageShapeOpt = None,
    value_range: ValueRangeOpt = None,
    classes: ClassesOpt = None,
    columns: ColumnsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100000)] = 2000,
    max_records: Annotated[int | None, typer.Option("--max-records", min=1)] = None,
    poll_timeout: Annotated[float, typer.Option("--poll-timeout", min=0.0)] = 1.0,
    idle_polls: Annotated[int, typer.Option("--idle-polls", min=1)] = 1,
    max_age: Annotated[
        int, typer.Option("--max-age", min=1, help="Freshness window for ts, seconds.")
    ] = 86400,
    fail_on_quarantine_rate: Annotated[
        float | None,
        typer.Option(
            "--fail-on-quarantine-rate",
            min=0.0,
            max=1.0,
            help="Exit 3 (gate refused) when quarantined/received of this run exceeds R.",
        ),
    ] = None,
    consumer_name: Annotated[
        str | None,
        typer.Option(
            "--consumer-name",
            help="Scale-out: this consumer's name, unique among the processes sharing the "
            "stream (e.g. the container or VM name); required with a lease table.",
        ),
    ] = None,
    lease_table: Annotated[
        str | None,
        typer.Option(
            "--lease-table",
            help="Scale-out (aws): DynamoDB lease table shared by the consumers of the stream "
            "(default: config [ingest.aws] lease_table).",
        ),
    ] = None,
    lease_duration: Annotated[
        float | None,
        typer.Option(
            "--lease-duration",
            help="Scale-out: seconds without renewal after which another consumer takes a "
            "shard over (1-3600; default 10).",
        ),
    ] = None,
    commit_store: Annotated[
        str | None,
        typer.Option(
            "--commit-store",
            help="Scale-out (gcp, azure): shared create-only store of message claims and "
            "batch decisions: gs://BUCKET[/PREFIX] or file:///DIR (gcp), az://CONTAINER[/PREFIX] "
            "(azure; default: config commit_store); with --consumer-name.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    sarif: SarifOpt = None,
    junit: JunitOpt = None,
    force: ForceOpt = False,
) -> None:
    """Validate, sanitize, verify provenance, dedupe, encrypt and store; quarantine the rest.

    Several processes can share one stream (--consumer-name with --lease-table on Kinesis,
    --commit-store on Pub/Sub): a dead one's shards are taken over after --lease-duration, its
    redelivered Pub/Sub messages are stored once (ingestion/README.md, "Scale-out").
    """
    from saip_ingestion.backends.local import FileRecordStream
    from saip_ingestion.engine import IngestEngine
    from saip_ingestion.errors import IngestError
    from saip_ingestion.provenance import ProducerRegistry

    from saip.errors import GateError

    state = get_state()
    if "stream" in source and len(source) > 1:
        raise typer.BadParameter("--source stream cannot be combined with files")
    if source != ["stream"]:
        for src in source:
            require_input(Path(src), what="source")
    for path in (sarif, junit):
        if path is not None:
            require_output(path, force=force)
    image_spec, tabular_spec = _specs(dataset, image_shape, value_range, classes, columns)
    scale_out = {
        "consumer": consumer_name,
        "lease_table": lease_table,
        "lease_duration": lease_duration,
        "commit_store": commit_store,
    }
    _name, rs, store, state_dir = _backend(
        backend, endpoint_url, region, stream, bucket, **scale_out
    )
    encryptor = _encryptor(key, endpoint_url, region)
    registry = ProducerRegistry(state.data_dir / "ingest" / "producers")
    if source != ["stream"]:
        for src in source:
            if not Path(src).is_file():
                raise IngestError(f"source file not found: {src}")
    with IngestEngine(
        store=store,
        encryptor=encryptor,
        registry=registry,
        state_dir=state_dir,
        image_spec=image_spec,
        tabular_spec=tabular_spec,
        max_age_ms=max_age * 1000,
    ) as engine:
        scaled = hasattr(rs, "held")  # leased Kinesis or claimed Pub/Sub stream
        if scaled:
            rs.held = engine.held_messages  # intents/claims never cover undecided v2 messages
        streams: list[Any] = [rs]
        if source != ["stream"]:
            streams = [
                FileRecordStream(Path(src), checkpoint_dir=state_dir / "checkpoints")
                for src in source
            ]
        try:
            for rstream in streams:
                if max_records is not None and engine.summary.received >= max_records:
                    break
                engine.run(  # max_records counts over all sources (the summary is cumulative)
                    rstream,
                    batch_size=batch_size,
                    max_records=max_records,
                    poll_timeout=poll_timeout,
                    idle_polls=idle_polls,
                )
        finally:
            for rstream in streams:
                if isinstance(rstream, FileRecordStream):
                    rstream.close()
            if scaled:
                rs.close()  # gives leases back / releases un-acked messages at once
        summary = engine.finish().as_dict()
    write_gate_files(
        ingest_findings(summary),
        tool="saip-ingest",
        artifact=", ".join(source),
        sarif=sarif,
        junit=junit,
        force=force,
        seconds=float(summary.get("seconds", 0.0)),
    )
    if not summary["conserved"]:
        raise IngestError("record counts are not conserved (received != accepted + quarantined)")
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(summary)
    if fail_on_quarantine_rate is not None and summary["received"]:
        rate = summary["quarantined"] / summary["received"]
        if rate > fail_on_quarantine_rate:
            raise GateError(
                f"quarantine rate {rate:.3f} of this run exceeds --fail-on-quarantine-rate "
                f"{fail_on_quarantine_rate} ({summary['quarantined']} of {summary['received']})"
            )


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
    force: ForceOpt = False,
) -> None:
    """Decrypt accepted image records into an npz (x, y, producer, record_id) for the scan.

    The file holds plaintext training data: it is written 0600, atomically, never over an
    existing file without ``--force``.
    """
    if fmt != "npz":
        raise typer.BadParameter("--format must be npz")
    if out.suffix != ".npz":
        raise InputError(f"output {out}: the file name must end in .npz")
    require_output(out, force=force)
    from saip_ingestion.engine import export_npz

    _name, _rs, store, _ = _backend(backend, endpoint_url, region, stream, bucket)
    with atomic_output(out, force=force) as tmp:
        info = export_npz(store, _encryptor(key, endpoint_url, region), tmp)
    info["path"] = str(out)
    if as_json:
        typer.echo(json.dumps(info))
    else:
        get_state().console.print(
            f"exported {info['records']} records ({info['width']}x{info['height']}) to {out}"
        )


@app.command("verify")
def verify_cmd(
    producer: Annotated[str, typer.Option("--producer", help="The record's producer.")],
    seq: Annotated[int, typer.Option("--seq", min=0, help="The record's seq.")],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove one stored record (producer, seq): its leaf, its batch, its producer's signature.

    Exit 0 when proven, 3 when the proof is refused (the reason is named), 1 on other errors.
    """
    from saip_ingestion.errors import ProvenanceError
    from saip_ingestion.verify import verify_stored_record

    from saip.errors import GateError

    _name, _rs, store, _ = _backend(backend, endpoint_url, region, stream, bucket)
    try:
        proof = verify_stored_record(
            store, _encryptor(key, endpoint_url, region), _registry(),
            producer_id=producer, seq=seq,
        )  # fmt: skip
    except ProvenanceError as exc:
        raise GateError(f"record seq {seq} of {producer!r} not proven: {exc}") from None
    if as_json:
        typer.echo(json.dumps(proof.as_dict()))
    else:
        get_state().console.print(
            f"proven: seq {seq} of {producer} ({proof.format}, key {proof.key_id})"
        )


def _quarantine_store(
    backend: str | None,
    key: str | None,
    endpoint_url: str | None,
    region: str | None,
    stream: str | None,
    bucket: str | None,
) -> Any:
    from saip_ingestion.quarantine import QuarantineStore

    _name, _rs, store, _ = _backend(backend, endpoint_url, region, stream, bucket)
    return QuarantineStore(store, _encryptor(key, endpoint_url, region))


def _full_qid(qs: Any, qid: str) -> str:
    """Expand a unique prefix (at least 4 hex characters) of a quarantine id, as git does."""
    if len(qid) == 32 or not re.fullmatch(r"[0-9a-f]{4,31}", qid):
        return qid  # full ids and malformed input go to the store, which names the problem
    from saip_ingestion.errors import QuarantineError

    matches = sorted({q for q, _reason, _key in qs.keys() if q.startswith(qid)})  # noqa: SIM118
    if len(matches) != 1:
        raise QuarantineError(
            f"quarantine id prefix {qid} matches {len(matches)} entries"
            + (
                f" ({', '.join(m[:12] for m in matches[:5])}…): give more characters"
                if matches
                else ""
            )
        )
    return str(matches[0])


@quarantine_app.command("list")
def quarantine_list(
    reason: Annotated[str | None, typer.Option("--reason", help="Only this reason code.")] = None,
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List quarantined records (reason, producer, record id, detail)."""
    from rich.markup import escape
    from saip_ingestion.quarantine import REASONS, terminal_safe

    if reason is not None and reason not in REASONS:
        raise typer.BadParameter(f"unknown reason {reason!r}; known: {', '.join(REASONS)}")
    qs = _quarantine_store(backend, key, endpoint_url, region, stream, bucket)
    entries = [e.summary() for e in qs.entries(reason=reason)]
    if as_json:
        typer.echo(json.dumps(entries))  # ASCII-escaped JSON
        return
    table = Table(title=f"quarantine ({len(entries)} entries)")
    table.add_column("qid", no_wrap=True, min_width=32)  # copy-pasted into show/release
    for col in ("reason", "producer", "record", "detail", "released"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(
            e["qid"],
            e["reason"],
            e["producer_id"] or "-",
            e["record_id"] or "-",
            escape(terminal_safe(e["detail"][:80])),
            "yes" if e["released"] else "",
        )
    get_state().console.print(table)


@quarantine_app.command("show")
def quarantine_show(
    qid: Annotated[str, typer.Argument(help="Quarantine id (32 hex, or a unique prefix).")],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
) -> None:
    """Show one entry as JSON on stdout, raw record included (decrypted)."""
    from saip_ingestion.quarantine import terminal_safe

    qs = _quarantine_store(backend, key, endpoint_url, region, stream, bucket)
    entry = qs.get(_full_qid(qs, qid))
    doc = entry.summary()
    doc["raw"] = entry.raw.decode("utf-8", errors="backslashreplace")
    # valid JSON; bidi overrides, C1 controls and other invisible characters are escaped
    typer.echo(terminal_safe(json.dumps(doc, ensure_ascii=False)))


@quarantine_app.command("release")
def quarantine_release(
    qid: Annotated[str, typer.Argument(help="Quarantine id (32 hex, or a unique prefix).")],
    backend: BackendOpt = None,
    key: KeyOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    stream: StreamOpt = None,
    bucket: BucketOpt = None,
    dataset: DatasetOpt = None,
    image_shape: ImageShapeOpt = None,
    value_range: ValueRangeOpt = None,
    classes: ClassesOpt = None,
    columns: ColumnsOpt = None,
    max_age: Annotated[int, typer.Option("--max-age", min=1)] = 86400,
) -> None:
    """Re-run every check on a quarantined record; it is released only if it now passes.

    A record quarantined for its content (range, label, shape, text) can be released after the
    declared spec changes (pass the new spec); its ts and seq were admitted on first receipt.
    """
    from saip_ingestion.engine import IngestEngine
    from saip_ingestion.errors import QuarantineError
    from saip_ingestion.provenance import ProducerRegistry

    state = get_state()
    image_spec, tabular_spec = _specs(dataset, image_shape, value_range, classes, columns)
    _name, _rs, store, state_dir = _backend(backend, endpoint_url, region, stream, bucket)
    qid = _full_qid(_quarantine_store(backend, key, endpoint_url, region, stream, bucket), qid)
    with IngestEngine(
        store=store,
        encryptor=_encryptor(key, endpoint_url, region),
        registry=ProducerRegistry(state.data_dir / "ingest" / "producers"),
        state_dir=state_dir,
        image_spec=image_spec,
        tabular_spec=tabular_spec,
        max_age_ms=max_age * 1000,
    ) as engine:
        outcome, reason = engine.release(qid)
    if outcome == "quarantined":
        raise QuarantineError(f"{qid} still fails its checks ({reason}); not released")
    state.console.print(f"released {qid}: {outcome}")


producers_app = typer.Typer(
    no_args_is_help=True, help="Consumer-side producer registry (public keys only)."
)
app.add_typer(producers_app, name="producers")


def _registry() -> Any:
    from saip_ingestion.provenance import ProducerRegistry

    return ProducerRegistry(get_state().data_dir / "ingest" / "producers")


@producers_app.command("add")
def producers_add(
    name: Annotated[str, typer.Argument(help="Producer id (a-z0-9-).")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="Ed25519 public key: PEM or base64 of 32 bytes.")
    ],
) -> None:
    """Register a producer's public key (the consumer never holds private keys)."""
    from saip_ingestion.errors import ProvenanceError
    from saip_ingestion.provenance import load_public_key

    if not public_key.is_file():
        raise ProvenanceError(f"public key file not found: {public_key}")
    kid = _registry().register(name, load_public_key(public_key.read_bytes()))
    get_state().console.print(f"registered producer {name} key {kid}")


@producers_app.command("list")
def producers_list(as_json: JsonOpt = False) -> None:
    """Registered producers and their keys (revoked keys included)."""
    rows = _registry().describe()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"producers ({len(rows)} keys)")
    for col in ("producer", "key id", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["producer_id"], r["key_id"], "REVOKED" if r["revoked"] else "")
    get_state().console.print(table)


@producers_app.command("revoke")
def producers_revoke(
    name: Annotated[str, typer.Argument(help="Producer id.")],
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Only this key (default: every key).")
    ] = None,
) -> None:
    """Revoke a producer's key(s): later records signed with them are quarantined."""
    done = _registry().revoke(name, key_id)
    get_state().console.print(f"revoked {len(done)} key(s) of {name}: {', '.join(done) or '-'}")


@app.command("sign")
def sign_cmd(
    source: Annotated[Path, typer.Argument(help="JSONL of {schema, payload[, record_id]}.")],
    out: Annotated[Path, typer.Argument(help="Output JSONL of signed records.")],
    producer: Annotated[str, typer.Option("--producer", help="Producer name (a-z0-9-).")],
    tree_size: Annotated[
        int, typer.Option("--tree-size", min=1, max=65536, help="Records per signed Merkle batch.")
    ] = 256,
    batch_format: Annotated[
        str,
        typer.Option(
            "--batch-format",
            help="v2: one signed batch header, records carry their leaf index (default); "
            "v1: an inclusion proof in every record.",
        ),
    ] = "v2",
    as_json: JsonOpt = False,
) -> None:
    """Sign your own image, tabular or text records with the producer's key (see the format doc)."""
    from saip_ingestion.producer import sign_records

    if batch_format not in ("v1", "v2"):
        raise typer.BadParameter("--batch-format must be v1 or v2")
    state = get_state()
    result = sign_records(
        data_dir=state.data_dir, producer=producer, source=source, out=out, tree_size=tree_size,
        batch_format=batch_format,
    )  # fmt: skip
    doc = {
        "path": str(result.path),
        "records": result.records,
        "producer": producer,
        "key_id": result.key_id,
        "public_key": str(result.public_key_path),
        "seq": [result.first_seq, result.next_seq],
    }
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        state.console.print(
            f"signed {result.records} records to {out} (producer {producer}, key "
            f"{result.key_id}; public key for the consumer: {result.public_key_path})"
        )


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="ingest")

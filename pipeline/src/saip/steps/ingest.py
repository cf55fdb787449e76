"""Demo step "ingest": three signed producers (one compromised) → local ingestion → npz.

Producers ``alpha``, ``beta`` and ``gamma`` each sign a third of sklearn's digits. ``alpha`` is
compromised: a BadNets-style all-to-one patch trigger on 10% of its samples (label → 0), plus
six malformed lines and replayed/stale records. Everything is ingested on the local backend under
``<data_dir>/demo/`` (recreated each run; inspect it with
``saip --data-dir <data_dir>/demo ingest quarantine list``) with the master key from the keys step
(``ctx.artifacts["key_uri"]``), then the accepted records are exported for the poisoning scan.

Artifacts set: ``dataset_npz`` (x, y, producer, record_id), ``ingest_summary`` (the run summary
with per-producer health), ``poison_truth`` (ground truth of the injected attack, for scoring the
scan), ``ingest_data_dir``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from saip_ingestion.backends.local import FileRecordStream, LocalObjectStore
from saip_ingestion.engine import DATASET_SPECS, IngestEngine, export_npz
from saip_ingestion.producer import parse_poison, produce
from saip_ingestion.provenance import ProducerRegistry

from saip.compose import build_encryptor, resolve_key_uri
from saip.errors import PipelineError
from saip.pipeline import PipelineContext, StepResult

_PRODUCERS = (
    ("alpha", ("patch:rate=0.1,target=0", "malformed:n=6", "replay:n=2")),
    ("beta", ()),
    ("gamma", ()),
)


def run(ctx: PipelineContext) -> StepResult:
    """Produce, ingest and export; see the module docstring."""
    base = ctx.data_dir / "demo"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True, mode=0o700)
    sources: list[Path] = []
    truth_path: Path | None = None
    for i, (name, attacks) in enumerate(_PRODUCERS, start=1):
        result = produce(
            data_dir=base,
            producer=name,
            dataset="digits",
            out=base / "incoming" / f"{name}.jsonl",
            poison=[parse_poison(a) for a in attacks],
            shard=(i, len(_PRODUCERS)),
            seed=ctx.seed,
        )
        sources.append(result.path)
        if attacks:
            truth_path = result.truth_path
    uri = resolve_key_uri(
        ctx.artifacts.get("key_uri"), configured=ctx.config.encryption.key, data_dir=ctx.data_dir
    )
    encryptor = build_encryptor(uri, context=ctx.config.encryption.context)
    store = LocalObjectStore(base / "ingest" / "objects")
    registry = ProducerRegistry(base / "ingest" / "producers")
    state_dir = base / "ingest" / "state" / "local"
    with IngestEngine(
        store=store,
        encryptor=encryptor,
        registry=registry,
        state_dir=state_dir,
        image_spec=DATASET_SPECS["digits"],
    ) as engine:
        for src in sources:
            stream = FileRecordStream(src, checkpoint_dir=state_dir / "checkpoints")
            try:
                engine.run(stream, batch_size=2000)
            finally:
                stream.close()
        summary: dict[str, Any] = engine.finish().as_dict()
    if not summary["conserved"]:
        raise PipelineError("ingest step: received != accepted + quarantined")
    npz = base / "dataset.npz"
    exported = export_npz(store, encryptor, npz)
    (base / "ingest-summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    ctx.artifacts["dataset_npz"] = npz
    ctx.artifacts["ingest_summary"] = summary
    ctx.artifacts["ingest_data_dir"] = base
    if truth_path is not None:
        ctx.artifacts["poison_truth"] = truth_path
    flagged = sorted(
        p for p, h in summary["producers"].items() if h["flagged"] and not p.startswith("(")
    )
    reasons = ", ".join(f"{k} {v}" for k, v in summary["reasons"].items())
    return StepResult(
        name="ingest",
        summary=(
            f"received {summary['received']}, accepted {summary['accepted']} "
            f"({summary['duplicates']} duplicates), quarantined {summary['quarantined']} "
            f"({reasons}); flagged producers: {', '.join(flagged) or 'none'}; "
            f"{exported['records']} records → {npz.name}"
        ),
        details={
            "received": summary["received"],
            "accepted": summary["accepted"],
            "quarantined": summary["quarantined"],
            "duplicates": summary["duplicates"],
            "reasons": summary["reasons"],
            "flagged_producers": flagged,
            "label_tv": {p: h["max_label_tv"] for p, h in summary["producers"].items()},
            "dataset_npz": str(npz),
            "records_exported": exported["records"],
        },
    )

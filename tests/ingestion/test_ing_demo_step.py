"""The ``ingest`` demo step: three producers, one compromised, ingested and exported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from saip.config import SaipConfig
from saip.pipeline import PipelineContext
from saip.steps import ingest


@pytest.mark.slow
def test_ingest_step_sets_artifacts_and_flags_the_poisoned_producer(tmp_path: Path) -> None:
    ctx = PipelineContext(
        data_dir=tmp_path, config=SaipConfig(), console=Console(stderr=True, quiet=True)
    )
    result = ingest.run(ctx)
    summary = ctx.artifacts["ingest_summary"]
    assert summary["received"] == summary["accepted"] + summary["quarantined"]
    assert (
        summary["quarantined"] == 10
    )  # 6 malformed (incl. signed out-of-range) + 2 replays + 2 stale
    assert summary["duplicates"] == 2
    assert result.details["flagged_producers"] == ["alpha"]
    assert f"received {summary['received']}" in result.summary
    npz = np.load(ctx.artifacts["dataset_npz"])
    assert npz["x"].shape == (1797, 64)  # every digit exactly once
    assert len(set(npz["record_id"])) == 1797
    truth = json.loads(Path(ctx.artifacts["poison_truth"]).read_text())
    poisoned = set(truth["poisoned_record_ids"])
    assert len(poisoned) == 60
    assert poisoned <= set(npz["record_id"])  # the signed attack passes ingestion: the scan's job
    rerun = ingest.run(ctx)  # idempotent demo: a fresh demo directory each time
    assert rerun.details["received"] == summary["received"]

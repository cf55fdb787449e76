"""Live check against a real AWS account (skipped unless SAIP_LIVE=1 and AWS credentials are set,
see tests/conftest.py): plan the AWS example with the real provider. Plan only — nothing is created.
Set SAIP_LIVE_TF_PREFIX to a globally unique prefix for the bucket names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import INFRA, tf


@pytest.mark.live("aws")
@pytest.mark.slow
def test_aws_example_plans_against_a_real_account(tf_mirror: object) -> None:
    example = INFRA / "aws" / "examples" / "secure-ingestion"
    init = tf(example, "init", "-backend=false", "-input=false", "-no-color")
    assert init.returncode == 0, init.stdout + init.stderr
    prefix = os.environ.get("SAIP_LIVE_TF_PREFIX", "saip-live-check")
    plan = tf(example, "plan", "-input=false", "-no-color", "-lock=false", f"-var=prefix={prefix}")
    assert plan.returncode == 0, plan.stdout[-4000:] + plan.stderr[-4000:]
    assert "aws_kms_key.this will be created" in plan.stdout
    assert plan.stdout.count("aws_s3_bucket_policy.this will be created") == 3  # no escape hatch

"""Fixtures of the infra tests; the helpers live in infra_tf_helpers.py (unique basename, imported
by path because pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from infra_tf_helpers import checkov_scans, tf_mirror  # noqa: F401

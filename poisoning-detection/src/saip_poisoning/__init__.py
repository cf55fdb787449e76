"""Poisoning detection before training: detectors, fused risk score, mitigations.

Public API: :func:`scan` (all detectors fused into a :class:`ScanReport`), :func:`client_filter`
(keep-mask hook for federated clients), the individual detectors in
:mod:`saip_poisoning.detectors`, and :class:`PoisoningInputError` for malformed input.
"""

from saip_poisoning.client import client_filter
from saip_poisoning.detectors import DetectionReport
from saip_poisoning.errors import PoisoningInputError
from saip_poisoning.scan import BANDS, Mitigation, ScanReport, band, filter_iteratively, scan

__all__ = [
    "BANDS",
    "DetectionReport",
    "Mitigation",
    "PoisoningInputError",
    "ScanReport",
    "band",
    "client_filter",
    "filter_iteratively",
    "scan",
]

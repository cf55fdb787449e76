"""Poisoning detection before training: calibrated scan, risk score, mitigation, verification.

Public API: :func:`scan` (a :class:`ScanReport`), :func:`mitigate` (remove trigger carriers,
relabel label noise, optional counter-examples, retrain and verify: a
:class:`MitigationResult`), :func:`client_filter` (keep-mask hook for federated clients), the
individual detectors in :mod:`saip_poisoning.detectors`, :class:`ImageProbe` (the scan's
second probe for images) and :class:`PoisoningInputError`.
"""

from saip_poisoning.client import client_filter
from saip_poisoning.data import Prepared, prepare
from saip_poisoning.detectors import DetectionReport
from saip_poisoning.errors import PoisoningInputError
from saip_poisoning.imageprobe import ImageProbe
from saip_poisoning.mitigation import MitigationResult, mitigate
from saip_poisoning.scan import BANDS, Mitigation, ScanReport, band, scan

__all__ = [
    "BANDS",
    "DetectionReport",
    "ImageProbe",
    "Mitigation",
    "MitigationResult",
    "PoisoningInputError",
    "Prepared",
    "ScanReport",
    "band",
    "client_filter",
    "mitigate",
    "prepare",
    "scan",
]

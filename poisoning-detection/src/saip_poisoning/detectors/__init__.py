"""Poisoning detectors, one module per method, all behind :class:`DetectionReport`."""

from saip_poisoning.detectors.activation_clustering import ActivationClustering
from saip_poisoning.detectors.base import DetectionReport, Detector, robust_z
from saip_poisoning.detectors.gradient import GradientSimilarity
from saip_poisoning.detectors.loss import LossTrajectory
from saip_poisoning.detectors.outliers import ClassSizePrior, KnnLabelDisagreement, RobustOutliers
from saip_poisoning.detectors.reclassify import ExclusionaryReclassification
from saip_poisoning.detectors.spectral import SpectralSignature

__all__ = [
    "ActivationClustering",
    "ClassSizePrior",
    "DetectionReport",
    "Detector",
    "ExclusionaryReclassification",
    "GradientSimilarity",
    "KnnLabelDisagreement",
    "LossTrajectory",
    "RobustOutliers",
    "SpectralSignature",
    "robust_z",
]

"""Detectors: decide whether an input is adversarial, next to the classifier."""

from advbridge.defenses.detector.feature_squeezing import SqueezeDetector, calibrate_threshold, detection_metrics
from advbridge.defenses.detector.rejecting import RejectingClassifier

__all__ = ["RejectingClassifier", "SqueezeDetector", "calibrate_threshold", "detection_metrics"]

"""Detectors: decide whether an input is adversarial, next to the classifier."""

from advbridge.defenses.detector.feature_squeezing import SqueezeDetector, calibrate_threshold, detection_metrics

__all__ = ["SqueezeDetector", "calibrate_threshold", "detection_metrics"]

"""Preprocessors: transformations of the input in front of a classifier, as ``nn.Module`` on [0, 1]."""

from advbridge.defenses.preprocessor.defended import PreprocessedClassifier
from advbridge.defenses.preprocessor.squeezing import (
    BACKWARDS,
    BitDepth,
    MedianFilter,
    Resample,
    Squeezer,
    build_squeezer,
)

__all__ = ["BACKWARDS", "BitDepth", "MedianFilter", "PreprocessedClassifier", "Resample", "Squeezer", "build_squeezer"]

"""Datasets and preprocessing, one module per modality (images, tables, ...)."""
from .core import ArrayLoader, DataBundle, Splits, apply_preprocess, build_data, fit_standardize

__all__ = ["ArrayLoader", "DataBundle", "Splits", "apply_preprocess", "build_data", "fit_standardize"]

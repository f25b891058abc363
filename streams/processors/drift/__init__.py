"""Drift detection per program: the processor, the detector and its statistical tests."""

"""Anomaly detection from good images only (``task: anomaly``)."""

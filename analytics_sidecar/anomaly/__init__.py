"""Anomaly detection: online detectors, calibration, NAB evaluation."""

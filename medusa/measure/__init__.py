"""Measuring heads: trees, calibration, replayed acceptance."""

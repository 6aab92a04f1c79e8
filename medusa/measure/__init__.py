"""Measuring heads: tree calibration (`calibrate-tree`), replayed acceptance (`measure-acceptance`).
"""

"""Grading course submissions: the harness and its report."""

"""Evaluation: data, prompts, metrics, result files, tables and plots."""

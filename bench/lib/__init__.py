"""Helpers of bench/run.py: one module per group of figures, plus shared plumbing."""

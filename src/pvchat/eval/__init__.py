"""Evaluation: metrics of paper §4.1 and runners."""

"""Evaluation: metrics, statistics and (to come) strategies, the compare runner and reports."""

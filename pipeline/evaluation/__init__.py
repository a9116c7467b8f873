"""Evaluation and report: metrics, and the paper-style table and charts."""

"""Evaluation: predictions of a student on a split, accuracy metrics and comparison tables."""

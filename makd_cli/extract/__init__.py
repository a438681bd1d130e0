"""Extraction drivers: run a teacher over classes or images, resumably, and write targets.h5."""

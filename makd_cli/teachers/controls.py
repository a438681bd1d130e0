"""The control teachers (``makd extract --teacher random | word-embedding``) live in ``makd_cli/controls.py``
with the other controls; this module keeps the old import path."""

from makd_cli.controls import CONTROL_TEACHERS, default_sentence_model, run_control_teacher, sentence_embeddings

__all__ = ["CONTROL_TEACHERS", "default_sentence_model", "run_control_teacher", "sentence_embeddings"]

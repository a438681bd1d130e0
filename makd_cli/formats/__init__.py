"""Versioned file formats exchanged between subcommands (see docs/formats.md)."""

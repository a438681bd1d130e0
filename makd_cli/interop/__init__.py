"""Other projects' files, read into makd's formats and written back (one module per foreign format)."""

"""``makd report``: one self-contained page (HTML, or Markdown with its pictures beside it) per comparison."""

"""``makd inspect``: one module per view, registered in ``makd_cli.inspect.views.VIEWS``."""

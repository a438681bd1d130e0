"""makd: teach small image classifiers what large language models know.

The pipeline's logic lives in the subpackages; ``makd_cli.cli`` only parses arguments.
"""

__version__ = "0.1.0"

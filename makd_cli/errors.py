"""The one user-facing error type.

Library code raises ``MakdError`` with a message that says what is wrong and how to fix it;
the CLI prints that one line and exits with code 2. Anything else is a bug and keeps its traceback.
"""


class MakdError(Exception):
    exit_code = 2

    def __init__(self, message: str):
        # One line: the CLI prints it as is, so newlines would break scripts that grep stderr.
        super().__init__(" ".join(str(message).split()))


def resume_mismatch(where: str, flag: str, was, now) -> MakdError:
    """The one line for ``--resume`` given other settings than the run in ``where`` (its last.pt) started with."""
    return MakdError(f"{where} was trained with {flag} {was}, not {now}; resume with the same options or choose another -o")

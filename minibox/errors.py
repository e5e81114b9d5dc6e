"""The one exception type the CLI turns into a single line on stderr, and how a child process
hands such a line to its parent."""

# Docker's exit codes for failures of the runtime itself and of the command.
RUNTIME_ERROR = 125
CANNOT_RUN = 126
NOT_FOUND = 127


class MiniboxError(Exception):
    """A failure the user can act on: printed as `minibox: <message>`, exit `exit_code`."""

    def __init__(self, message, exit_code=RUNTIME_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def bug_line(error):
    """An exception we did not expect, still as one line: its type says where to look."""
    return f"{type(error).__name__}: {error}"


# A child that fails before it can exec or report success (the container's init, the
# detached monitor) tells its parent why in one message: b"error <exit code> <text>".

def failure_report(exit_code, text):
    return f"error {exit_code} {text}".encode()


def read_failure_report(message):
    """The MiniboxError a failure_report message carries, or None for any other message."""
    if not message.startswith(b"error "):
        return None
    _, code, text = message.decode(errors="replace").split(" ", 2)
    return MiniboxError(text, int(code))


"""The one exception type the CLI turns into a single line on stderr."""

# Docker's exit codes for failures of the runtime itself and of the command.
RUNTIME_ERROR = 125
CANNOT_RUN = 126
NOT_FOUND = 127


class MiniboxError(Exception):
    """A failure the user can act on: printed as `minibox: <message>`, exit `exit_code`."""

    def __init__(self, message, exit_code=RUNTIME_ERROR):
        super().__init__(message)
        self.exit_code = exit_code

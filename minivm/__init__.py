"""minivm: boot a tiny guest kernel under QEMU and run one command in it."""


class MinivmError(Exception):
    """A problem the user can act on; the CLI prints it as one line and exits non-zero."""

"""mybox: a container runtime in one file, written level by level in the workshop.

    sudo python3 mybox.py run [options] -- COMMAND [ARG...]

Every level adds one kernel interface. This is the reference for all of them: the lines
between `# >>> NN` and `# <<< NN` are level NN's solution, and the `#~` lines after
`# --- NN` are what the participant's starting file holds there instead. levels.py turns this
file into level NN's starting file or its solution (see examples/workshop/README.md).
"""
import argparse
import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    """Raise OSError with errno's message when a libc call returned -1."""
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result












def child(args):
    """The container's first process: isolate, then become the command (execve(2))."""
    os.execvp(args.command[0], args.command)


def run(args):
    """Start the container, wait for it, return its exit code (128+N for signal N)."""
    # TODO 00: fork(); in the child call child(args) and os._exit(127) if it returns;
    # in the parent waitpid() and return the exit code: os.waitstatus_to_exitcode(status),
    # or 128 + N when signal N killed it (the shell's convention).
    return 0






def main():
    parser = argparse.ArgumentParser(prog="mybox.py")
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="run COMMAND in a container")
    run_parser.add_argument("command", nargs="+")
    actions = {"run": run}
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("mybox.py: must be run as root (try sudo)")
    sys.exit(actions[args.action](args))


if __name__ == "__main__":
    main()

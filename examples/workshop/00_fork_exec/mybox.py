"""mybox: a container runtime in one file, written level by level in the workshop.

    sudo python3 mybox.py run [options] -- COMMAND [ARG...]     # levels 00-07
    sudo python3 mybox.py vm --kernel VMLINUX -- COMMAND        # level 08
    sudo python3 mybox.py kvm                                   # level 09

Every level adds one kernel interface (examples/workshop/NN_name/README.md). Every level's
file is made from one reference, examples/workshop/solutions/mybox.py: there level NN's
solution sits between `# >>> NN` and `# <<< NN`, its TODOs in `#~` lines after `# --- NN`,
and levels.py writes level NN's starting file or its solution from it.
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

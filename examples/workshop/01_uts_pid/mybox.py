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
    # TODO 01: unshare(CLONE_NEWUTS | CLONE_NEWNS), then sethostname(args.hostname).
    os.execvp(args.command[0], args.command)


def run(args):
    """Start the container, wait for it, return its exit code (128+N for signal N)."""
    # TODO 01: unshare(CLONE_NEWPID) so that the child forked below is PID 1.
    pid = os.fork()
    if pid == 0:
        try:
            child(args)
        except OSError as error:
            print(f"mybox: {error}", file=sys.stderr)
        os._exit(127)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code






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

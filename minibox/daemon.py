"""Detaching a process from whoever started it, two of the steps daemon(7) lists: stdio on
/dev/null, and no inherited file descriptor left open. An fd it keeps of its caller's (a
pipe a shell or a test reads until EOF, a --step terminal) would keep that reader waiting
until this process exits. (Its own session, setsid(2), is the caller's to decide.)

One process of minibox outlives the command that started it: the detached monitor
(monitor.py), which also serves the published ports (portproxy.py). It spends its life
waiting, so it waits in a bare interpreter (`exec_python`): what the runtime imported to set
the container up (pyroute2) would otherwise stay resident in each (bench/README.md,
"Container memory").
"""
import os
import sys


def stdio_to_dev_null():
    """dup2(2) /dev/null over fds 0, 1 and 2."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def close_fds_except(*keep):
    """close(2) every fd above 2 but `keep`, as /proc/self/fd lists them."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listdir's own fd, already gone


def exec_python(function, args, lean=True):
    """execve(2) a fresh interpreter that runs `function(args)` ("module.name" in minibox;
    args: strings). Never returns.

    lean: `-I -S`, the bare interpreter: no site-packages (site.py and the virtualenv's
    .pth files would load modules the waiting never uses) and no environment (PYTHONPATH,
    PYTHONSTARTUP: a root process runs none of the caller's code). Without it, `-I` only:
    the runtime needs its site-packages (pyroute2). Either way, minibox itself is found
    where this file is."""
    module, name = function.rsplit(".", 1)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
            f"from minibox.{module} import {name}; {name}(sys.argv[1:])")
    flags = ["-I", "-S"] if lean else ["-I"]
    for stream in (sys.stdout, sys.stderr):  # what Python still buffers would be lost
        stream.flush()
    os.execv(sys.executable, [sys.executable, *flags, "-c", code, *args])

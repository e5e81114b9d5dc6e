"""Detaching a process from whoever started it, two of the steps daemon(7) lists: stdio on
/dev/null, and no inherited file descriptor left open. An fd it keeps of its caller's (a
pipe a shell or a test reads until EOF, a --step terminal) would keep that reader waiting
until this process exits. (Its own session, setsid(2), is the caller's to decide.)

Two processes of minibox outlive the command that started them: the detached monitor
(monitor.py) and the port proxy (portproxy.py).
"""
import os


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

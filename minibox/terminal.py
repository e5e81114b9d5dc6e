"""`-t`: give the container a real terminal, the way runc's console socket does (and, under an
engine, that very socket: send_console).

The pseudo-terminal is created *inside* the container, from its own devpts instance, so
`tty` in the container prints /dev/pts/0 and job control works. The init sends the master
side back to the runtime over a unix socket with SCM_RIGHTS (unix(7)); the runtime puts the
host terminal in raw mode (`RawMode`, which minivm's `-t` uses too) and copies bytes both
ways, and passes window size changes (SIGWINCH -> TIOCSWINSZ, tty_ioctl(4)) through: in the
container's monitor, the same poll(2) loop that waits for PID 1 (`Relay`, waiting.Loop),
so that the monitor of a `run -t` waits lean too (supervisor.py).
"""
import _signal  # not signal.py, nor contextlib: see waiting.py (this module waits lean too)
import _socket  # see container.py; imported before pivot_root, like this whole module
import fcntl
import os
import select
import struct
import sys
# At the top, not in RawMode: `minibox exec -t` enters it after setns(2) into the
# container's mount namespace, where the host's Python library is no longer there to import.
import termios
import tty

from .errors import MiniboxError
from .explain import step


@step("Open a pseudo-terminal in the container's devpts and make it the controlling terminal",
      syscall='openpty(); ioctl(slave, TIOCSCTTY); dup2(slave, 0..2); '
              'sendmsg(SCM_RIGHTS, master)', man="pty(7), tty_ioctl(4), unix(7)")
def open_console(channel):
    """In the init, after pivot_root: returns nothing; the master fd went to the runtime."""
    master, slave = os.openpty()
    make_controlling_terminal(slave)
    # SCM_RIGHTS (unix(7)): the kernel installs a copy of `master` in the runtime's table.
    channel.sendmsg([b"console"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                    struct.pack("i", master))])
    os.close(master)


def connect_console_socket(socket_path):
    """runc's console socket, step 1: connect(2) to the engine's unix socket -- early, while
    its path still names the host's file (`exec` chroots into the container before it has
    a terminal to send)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_path)
    except OSError as error:
        sock.close()
        raise MiniboxError(f"--console-socket {socket_path}: {error.strerror}") from None
    return sock


def send_console(sock, master):
    """Step 2: pass the pty master in one sendmsg(2) with SCM_RIGHTS, its name as the
    payload (containerd's console package and conmon read one message); the engine relays
    the terminal from then on. Closes both."""
    try:
        sock.sendmsg([b"/dev/ptmx"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                       struct.pack("i", master))])
    except OSError as error:
        raise MiniboxError(f"cannot send the terminal to --console-socket: {error.strerror}"
                           ) from None
    finally:
        sock.close()
        os.close(master)


def make_controlling_terminal(slave):
    """The pty's slave side becomes our controlling terminal and stdin, stdout, stderr
    (PID 1 with -t, and an exec'd process with -t); the slave fd itself is closed."""
    # setsid(2) was done first (init.new_session); a session leader without a controlling
    # terminal acquires one with TIOCSCTTY (tty_ioctl(4)).
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)


def _copy_window_size(source_fd, target_fd):
    try:
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(target_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # stdin is not a terminal: keep the kernel's default size


class RawMode:
    """`with RawMode(fd):` the terminal on fd in raw mode, restored however the block ends.

    Raw mode (termios(3), cfmakeraw) turns off the host's line editing, echo and signal keys,
    so every key, Ctrl-C included, travels to the other side, whose own terminal does all that.
    Nothing happens when fd is not a terminal.
    """

    def __init__(self, fd):
        self.fd = fd
        self.saved = None

    def __enter__(self):
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        return self

    def __exit__(self, *_exception):
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class Relay:
    """`with Relay(loop, master, forward_stdin):` copy host stdin -> master and master -> host
    stdout on `loop` (waiting.Loop), the host terminal in raw mode, window size changes
    passed on. `done` once the container side has closed; then `master` is closed too on
    leaving the block. Left open otherwise: a monitor that goes lean passes it on to its next
    interpreter (supervisor.py), where the relay goes on -- what the container wrote
    meanwhile waits in the pty. Writes block: a host terminal that can't keep up slows the
    container down, as it would without us."""

    def __init__(self, loop, master, forward_stdin):
        self.loop, self.master, self.forward_stdin = loop, master, forward_stdin
        self.stdin, self.stdout = sys.stdin.fileno(), sys.stdout.fileno()
        self.raw = RawMode(self.stdin)
        self.done = False
        self.previous = None

    def __enter__(self):
        _copy_window_size(self.stdin, self.master)
        self.previous = _signal.signal(
            _signal.SIGWINCH, lambda *_: _copy_window_size(self.stdin, self.master))
        self.raw.__enter__()
        self.loop.watch(self.master, select.POLLIN, self._from_container)
        if self.forward_stdin:
            self.loop.watch(self.stdin, select.POLLIN, self._from_host)
        return self

    def __exit__(self, *exception):
        self._forget()
        self.raw.__exit__(*exception)
        _signal.signal(_signal.SIGWINCH, self.previous)
        if self.done:
            os.close(self.master)

    def _from_container(self, _events):
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave fd closed, the container is gone
            data = b""
        if not data:
            self.done = True
            self._forget()
            return
        try:
            os.write(self.stdout, data)
        except OSError:
            pass  # EIO: the host's terminal hung up; the container got SIGHUP (forwarded)

    def _from_host(self, _events):
        try:
            data = os.read(self.stdin, 65536)
        except OSError:  # EIO, as above
            data = b""
        if data:
            os.write(self.master, data)
        else:
            self.loop.forget(self.stdin)

    def _forget(self):
        self.loop.forget(self.master)
        self.loop.forget(self.stdin)

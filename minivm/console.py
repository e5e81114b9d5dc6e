"""The host's side of the serial console: split the guest's byte stream into its three parts.

Everything the guest says arrives on one serial line (the 8250 UART that QEMU wires to
minivm's pipe): first the kernel's boot log, then what the command prints, then the kernel's
last words. /init (see initramfs.INIT) frames the command's part with protocol lines:

    \\nMINIVM:<nonce>:init=<kernel release>\\n     init started; the boot log is over
    \\nMINIVM:<nonce>:notfound\\n                  the command does not exist in the guest
    \\nMINIVM:<nonce>:failed=<why>\\n              /init's device set-up failed (a mount, `ip`...)
    \\nMINIVM:<nonce>:oom=<kernel line>\\n        the guest kernel's OOM killer killed the command
    \\nMINIVM:<nonce>:exit=<status>\\n             the command ended with this status

Each starts with a newline of its own so it begins a line even after output that lacks a final
newline; the parser removes that newline again (and the CR before it when the guest terminal
turns LF into CR LF), so the command's bytes reach the host exactly as printed. The nonce is
random per run, so the command cannot forge a protocol line by accident.
"""
from collections import deque, namedtuple

KERNEL_LINES_KEPT = 12


# One protocol line: name is "init", "notfound", "failed", "oom" or "exit"; value is the text
# after "=".
Event = namedtuple("Event", "name value")


class Chunk:
    """What one feed() produced: the command's output, kernel log lines, protocol events."""

    def __init__(self):
        self.output = b""
        self.kernel_lines: list[str] = []
        self.events: list[Event] = []


class ConsoleParser:
    """Feed it bytes as they arrive; it returns what belongs to whom.

    Before the init line and after the exit line, bytes are kernel log: split into lines, CRs
    removed (the kernel's serial console always writes CR LF, drivers/tty/serial/serial_core.c
    uart_console_write()), and the last few kept for error messages. In between, bytes are the
    command's output and pass through at once, except a tail that could be the start of a
    protocol line, which waits for the next bytes to decide.
    """

    def __init__(self, nonce: str, crlf: bool = False):
        """crlf: the guest terminal turns LF into CR LF (an interactive tty keeps OPOST on)."""
        self._prefix = f"\nMINIVM:{nonce}:".encode()
        self._framing = (b"\r" + self._prefix) if crlf else self._prefix
        self._pending = b""
        self._released = b""  # a held-back tail shown after a pause (see release())
        self._in_command = False
        self._done = False
        self.kernel_tail: deque[str] = deque(maxlen=KERNEL_LINES_KEPT)

    def feed(self, data: bytes) -> Chunk:
        chunk = Chunk()
        self._pending += data
        while self._pending:
            if self._in_command:
                if not self._take_output(chunk):
                    break
            elif not self._take_kernel_line(chunk):
                break
        return chunk

    def _take_kernel_line(self, chunk: Chunk) -> bool:
        line, newline, rest = self._pending.partition(b"\n")
        if not newline:
            return False
        self._pending = rest
        event = self._event_in(b"\n" + line)
        if event is not None:
            chunk.events.append(event)
            self._in_command = event.name == "init" and not self._done
            return True
        text = line.decode(errors="replace").rstrip("\r")
        if text:
            self.kernel_tail.append(text)
            chunk.kernel_lines.append(text)
        return True

    def holding(self) -> bool:
        """True while some of the command's output waits to see if a protocol line starts."""
        return self._in_command and bool(self._pending)

    def release(self) -> Chunk:
        """After a pause, show the held-back tail: a program that prints a line and then waits
        must not have its newline kept from a reader on the host. Should the bytes turn out
        to begin a protocol line after all, the line is still recognised; the command's output
        then shows one newline it did not print."""
        chunk = Chunk()
        if self.holding():
            chunk.output = self._pending
            self._released += self._pending
            self._pending = b""
        return chunk

    def _take_output(self, chunk: Chunk) -> bool:
        if self._released:
            joined = self._released + self._pending
            if len(joined) < len(self._framing) and self._framing.startswith(joined):
                return False
            if joined.startswith(self._framing):
                self._pending = joined  # the released bytes were a protocol line's start
            self._released = b""
        start = self._pending.find(self._framing)
        if start < 0:
            cut = len(self._pending) - self._undecided_tail()
            chunk.output += self._pending[:cut]
            self._pending = self._pending[cut:]
            return False
        end = self._pending.find(b"\n", start + len(self._framing))
        if end < 0:
            return False
        chunk.output += self._pending[:start]
        event = self._event_in(self._pending[start:end])
        self._pending = self._pending[end + 1:]
        chunk.events.append(event)
        if event.name == "exit":
            self._in_command = False
            self._done = True
        return True

    def _undecided_tail(self) -> int:
        """How many trailing bytes could still grow into a protocol line's framing."""
        for size in range(min(len(self._framing), len(self._pending)), 0, -1):
            if self._framing.startswith(self._pending[-size:]):
                return size
        return 0

    def _event_in(self, line: bytes) -> Event | None:
        line = line.lstrip(b"\r").rstrip(b"\r")
        if not line.startswith(self._prefix):
            return None
        name, _, value = line[len(self._prefix):].decode(errors="replace").partition("=")
        return Event(name, value)


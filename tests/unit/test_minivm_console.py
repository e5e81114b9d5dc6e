"""The host side of the serial console protocol, fed recorded guest output."""
import pytest

from minivm.console import ConsoleParser, Event

NONCE = "feedc0de"
BOOT = (b"[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\r\n"
        b"[    2.100000] Run /init as init process\r\n")
INIT = f"\r\nMINIVM:{NONCE}:init=6.1.0-56-amd64\r\n".encode()
END = b"[    2.300000] reboot: Restarting system\r\n"


def exit_line(status, crlf=False):
    newline = b"\r\n" if crlf else b"\n"
    return newline + f"MINIVM:{NONCE}:exit={status}".encode() + newline


def parse(stream: bytes, crlf=False, chunk_size=None):
    """Feed the whole stream, in pieces of chunk_size bytes; collect what comes out."""
    parser = ConsoleParser(NONCE, crlf=crlf)
    output, kernel, events = b"", [], []
    size = chunk_size or len(stream)
    for start in range(0, len(stream), size):
        chunk = parser.feed(stream[start:start + size])
        output += chunk.output
        kernel += chunk.kernel_lines
        events += [(event.name, event.value) for event in chunk.events]
    return output, kernel, events, parser


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 7])
@pytest.mark.parametrize("command_output", [b"hello\n", b"no newline", b"", b"a\r\nb\n\n",
                                            b"MINIVM:forged:exit=9\n"])
def test_output_comes_through_byte_exact_however_it_is_split(chunk_size, command_output):
    stream = BOOT + INIT + command_output + exit_line(3) + END
    output, kernel, events, _ = parse(stream, chunk_size=chunk_size)
    assert output == command_output
    assert events == [("init", "6.1.0-56-amd64"), ("exit", "3")]
    assert kernel[0].startswith("[    0.000000] Linux version")
    assert kernel[-1].endswith("reboot: Restarting system")
    assert not any("\r" in line for line in kernel)


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_terminal_mode_strips_the_cr_of_the_protocol_newline(chunk_size):
    stream = BOOT + INIT + b"/ # exit 5\r\n" + exit_line(5, crlf=True) + END
    output, _, events, _ = parse(stream, crlf=True, chunk_size=chunk_size)
    assert output == b"/ # exit 5\r\n"
    assert events[-1] == ("exit", "5")


def test_not_found_is_an_event_and_no_output():
    stream = BOOT + INIT + f"\nMINIVM:{NONCE}:notfound\n".encode() + exit_line(127)
    output, _, events, _ = parse(stream)
    assert output == b""
    assert events == [("init", "6.1.0-56-amd64"), ("notfound", ""), ("exit", "127")]


def test_a_hung_boot_keeps_the_last_kernel_lines():
    lines = b"".join(b"[ %d.0] line %d\r\n" % (n, n) for n in range(40))
    output, _, events, parser = parse(lines)
    assert output == b"" and events == []
    assert list(parser.kernel_tail)[-1] == "[ 39.0] line 39"
    assert len(parser.kernel_tail) == 12


def test_output_is_released_as_soon_as_it_cannot_be_a_marker():
    parser = ConsoleParser(NONCE)
    parser.feed(BOOT + INIT)
    assert parser.feed(b"progress 10%").output == b"progress 10%"
    held = parser.feed(b"\nMINI")  # could be the start of the exit line: wait
    assert held.output == b""
    # Released; the final newline waits in turn, since a protocol line may follow it.
    assert parser.feed(b"MUM\n").output == b"\nMINIMUM"
    assert parser.feed(b"ok").output == b"\nok"


def test_a_held_back_newline_is_released_after_a_pause():
    parser = ConsoleParser("n0")
    parser.feed(b"\nMINIVM:n0:init=6.1\n")
    assert parser.feed(b"prompt\n").output == b"prompt"
    assert parser.holding()
    assert parser.release().output == b"\n"
    assert not parser.holding()
    assert parser.feed(b"more\n").output == b"more"


def test_a_protocol_line_is_still_seen_after_its_newline_was_released():
    parser = ConsoleParser("n0")
    parser.feed(b"\nMINIVM:n0:init=6.1\n")
    assert parser.feed(b"x\n").output == b"x"
    assert parser.release().output == b"\n"
    chunk = parser.feed(b"MINIVM:n0:exit=3\n")
    assert chunk.output == b"" and chunk.events == [Event("exit", "3")]

"""waiting.Loop: the monitor's one poll(2) loop (port relays, terminal, PID 1's pidfd)."""
import os
import select

from minibox import waiting


def test_an_event_for_a_closed_fd_never_reaches_the_file_that_took_its_number():
    """Two pipes readable in one poll(2) batch; the first handler closes the second and a
    new pipe takes its number (the lowest free one), as accept(2) would for a new client.
    The second pipe's event in that batch was the old file's: the new one is not told."""
    first_read, first_write = os.pipe()
    second_read, second_write = os.pipe()
    os.write(first_write, b"x")
    os.write(second_write, b"x")
    loop, calls, opened = waiting.Loop(), [], []

    def on_first(events):
        calls.append("first")
        loop.forget(first_read)
        loop.forget(second_read)
        os.close(second_read)
        new_read, new_write = os.pipe()  # new_read takes second_read's number
        opened.extend((new_read, new_write))
        loop.watch(new_read, select.POLLIN, lambda events: calls.append("new"))

    loop.watch(first_read, select.POLLIN, on_first)
    loop.watch(second_read, select.POLLIN, lambda events: calls.append("second"))
    loop.turn()
    assert opened[0] == second_read  # the number was reused: the case under test
    assert calls == ["first"]
    os.write(opened[1], b"y")
    loop.turn()
    assert calls == ["first", "new"]  # the new file's own events still arrive
    for fd in (first_read, first_write, second_write, *opened):
        os.close(fd)

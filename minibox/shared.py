"""What minibox and minivm share: small host helpers that belong to neither half.

Both halves keep state on disk that another process may read at any moment (replace_file),
recognise their own background processes after a restart (process_start_time), end a
command quickly (exit_now), and print times in RFC 3339 as Docker does (rfc3339). (The
`--format` templates both read are gotemplate.py's; the terminal's raw mode, which both use
too, is terminal.py's: the termios module's one home.)
Nothing here imports the rest of minibox beyond its error type, so minivm pays for no more
than it uses.
"""
import os
import sys

from .errors import MiniboxError


def replace_file(path, data, dir_fd=None):
    """Write `data` (str or bytes) to a file beside `path`, then rename(2) it over `path`:
    rename is atomic, so a reader sees the old file or the new one, never half of one.
    With dir_fd, `path` is relative to that directory (openat(2), renameat(2)): for a
    process that can no longer reach the directory by name (`exec` after its chroot)."""
    temporary = f"{path}.{os.getpid()}.tmp"

    def opener(name, flags):
        return os.open(name, flags, 0o666, dir_fd=dir_fd)
    try:
        with open(temporary, "wb" if isinstance(data, bytes) else "w", opener=opener) as out:
            out.write(data)
        os.replace(temporary, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as error:
        # ENOSPC comes from write(2) or close(2), whose OSError names no file: we do.
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass
        raise MiniboxError(f"cannot write {path}: {error.strerror}") from None


def process_start_time(pid):
    """Field 22 of /proc/<pid>/stat (proc(5)): with the pid, it names one process for all
    time. None when there is no such process, or only its zombie: it has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else int(fields[19])  # fields 3 (state) and 22


def process_alive(pid, start_time):
    """True if the process we recorded still runs (and its pid was not reused)."""
    return pid is not None and process_start_time(pid) == start_time


def exit_now(code):
    """End the process with `code` at once, as `minibox` and `minivm` do after a command.

    A normal exit tears the interpreter down first: every module's objects are freed one by
    one, which costs milliseconds with the ~100 modules a run loads. The kernel frees the
    memory anyway, so only what Python still buffers for stdout and stderr must go out
    before _exit(2)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass  # a reader that left (`| head`): nothing to deliver
    os._exit(code)


def rfc3339(timestamp):
    """A time.time() value as `docker inspect` prints times: RFC 3339 in UTC, e.g.
    2026-12-04T10:31:05.123456Z. None, a time that has not come, is Go's zero time."""
    if timestamp is None:
        return "0001-01-01T00:00:00Z"
    from datetime import datetime, timezone
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

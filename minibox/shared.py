"""What minibox and minivm share: small host helpers that belong to neither half.

Both halves keep state on disk that another process may read at any moment (replace_file),
recognise their own background processes after a restart (process_start_time), hand a
terminal over to the other side (raw_mode), end a command quickly (exit_now), and show a
record through a `--format` template the way `docker inspect -f` does (render_format, with
times in RFC 3339 as Docker prints them).
Nothing here imports the rest of minibox beyond its error type, so minivm pays for no more
than it uses.
"""
import contextlib
import json
import os
import re
import sys
# At the top, not in raw_mode: `minibox exec -t` calls raw_mode after setns(2) into the
# container's mount namespace, where the host's Python library is no longer there to import.
import termios
import tty

from .errors import MiniboxError


def replace_file(path, data):
    """Write `data` (str or bytes) to a file beside `path`, then rename(2) it over `path`:
    rename is atomic, so a reader sees the old file or the new one, never half of one."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb" if isinstance(data, bytes) else "w") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError as error:
        # ENOSPC comes from write(2) or close(2), whose OSError names no file: we do.
        with contextlib.suppress(OSError):
            os.unlink(temporary)
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


@contextlib.contextmanager
def raw_mode(fd):
    """Put the terminal on fd in raw mode, and restore it however the block ends.

    Raw mode (termios(3), cfmakeraw) turns off the host's line editing, echo and signal keys,
    so every key, Ctrl-C included, travels to the other side, whose own terminal does all that.
    Nothing happens when fd is not a terminal.
    """
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def rfc3339(timestamp):
    """A time.time() value as `docker inspect` prints times: RFC 3339 in UTC, e.g.
    2026-12-04T10:31:05.123456Z. None, a time that has not come, is Go's zero time."""
    if timestamp is None:
        return "0001-01-01T00:00:00Z"
    from datetime import datetime, timezone
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


# --- `inspect -f`: the part of Go's text/template that `docker inspect -f` is used with ---

_ACTION = re.compile(r"{{\s*(.*?)\s*}}")
_PATH = re.compile(r"\.|(?:\.\w+)+")


def render_format(template, data):
    """Fill `template`'s {{.Field.Path}} and {{json .Path}} actions from `data` (nested dicts).

    The subset of Go's text/template (pkg.go.dev/text/template) that `docker inspect -f`
    commands use: a field path ({{.}} is the whole record), and `json` to print a value as
    JSON. Values print as Go prints them: true/false, maps as map[key:value], lists as
    [a b]. Anything else (range, if, pipes) or a field that is not there is a MiniboxError
    naming the action, as Docker refuses the template rather than print half of it."""
    def fill(match):
        action = match.group(1)
        *function, path = action.split() or [""]
        if function not in ([], ["json"]) or not _PATH.fullmatch(path):
            raise MiniboxError(f"--format {template!r}: {{{{{action}}}}} is not supported: "
                               "use {{.Field.Path}} or {{json .Field.Path}}")
        value = data
        for name in path.split(".")[1:] if path != "." else ():
            if not isinstance(value, dict) or name not in value:
                raise MiniboxError(f"--format {template!r}: no field {path} in this record")
            value = value[name]
        return json.dumps(value, separators=(",", ":")) if function else _go_text(value)
    return _ACTION.sub(fill, template)


def _go_text(value):
    """A value as Go's fmt prints it with %v (what text/template does with a field)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{_go_text(value[key])}" for key in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_text(item) for item in value) + "]"
    return str(value)

"""The runtime calls an engine makes for every container -- `state`, `start`, `delete`,
`kill` -- read without click, and the one-line error contract every command shares.

containerd's shim and conmon call the runtime four or five times per `docker run` (create,
start, state, delete, delete --force, kill): each call is a new process, and click with what
it imports costs more than the call's work (bench/README.md, "Under an engine"). So
`minibox/__main__.py` hands the command line here first. `main` takes only the exact shapes
runc's callers use:

    [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup]
        state ID | start ID | delete [-f|--force] ID | kill [-a|--all] ID [SIGNAL]

and returns for anything else (`--help`, a typo, Docker's `kill -s C` or `kill C1 C2`, a user
without root), which click then parses, so that bad usage reads the same whichever way it
came in.
"""
import os
import sys

from .errors import RUNTIME_ERROR, MiniboxError, bug_line

_GLOBAL_VALUES = ("--root", "--log", "--log-format")
_GLOBAL_SWITCHES = ("--debug", "--systemd-cgroup")  # accepted for runc's callers (cli/)
# Each command's switches, and how many operands it takes (ID, and kill's SIGNAL).
_COMMANDS = {"state": ((), (1,)), "start": ((), (1,)), "delete": (("-f", "--force"), (1,)),
             "kill": (("-a", "--all"), (1, 2))}


def main(argv):
    """Run an engine's call and exit; return if `argv` is not one this module reads."""
    call = _parse(argv)
    if call is None:
        return
    from . import rootless
    if rootless.ENABLED:
        return  # click's gate says what a user without root may do
    settings, command, switches, operands = call
    from . import control
    if command == "kill" and len(operands) == 2 and not control.is_signal(operands[1]):
        return  # Docker's `kill C1 C2`: two containers
    try:
        if "--root" in settings:
            from . import state
            state.set_root(os.path.abspath(settings["--root"]))
        if "--log" in settings:
            open_runtime_log(settings["--log"], settings.get("--log-format", "text"))
        code = _run(command, switches, operands)
    except KeyboardInterrupt:
        code = 130
    except Exception as error:  # noqa: BLE001 -- failed() names it in one line
        code = failed(error)
    from .shared import exit_now
    exit_now(code)


def _parse(argv):
    """(global settings, command, its switches, its operands), or None for another shape."""
    settings, rest = {}, list(argv)
    while rest and rest[0].startswith("-"):
        name, equals, value = rest.pop(0).partition("=")
        if name in _GLOBAL_SWITCHES and not equals:
            continue
        if name not in _GLOBAL_VALUES or not (equals or rest):
            return None
        settings[name] = value if equals else rest.pop(0)
    if settings.get("--log-format", "text") not in ("text", "json") or not rest:
        return None
    command = rest.pop(0)
    if command not in _COMMANDS:
        return None
    allowed, counts = _COMMANDS[command]
    switches = {word for word in rest if word.startswith("-")}
    operands = [word for word in rest if not word.startswith("-")]
    if not switches <= set(allowed) or len(operands) not in counts:
        return None
    return settings, command, switches, operands


def _run(command, switches, operands):
    from . import control
    if command == "state":
        print(control.oci_state(operands[0]))
    elif command == "start":
        control.start(operands[0])
    elif command == "delete":
        control.delete(operands[0], force=bool(switches))
    else:
        signum = control.parse_signal(operands[1] if len(operands) == 2 else "TERM")
        control.kill(operands[0], signum, every_process=bool(switches))
    return 0


def failed(error):
    """An error as one line (report_error), and the exit status it gets: a MiniboxError's
    own; 125 for an OSError (named by its path) or a bug (MINIBOX_DEBUG=1 re-raises both,
    to show the traceback)."""
    if isinstance(error, MiniboxError):
        report_error(str(error))
        return error.exit_code
    if os.environ.get("MINIBOX_DEBUG"):
        raise error
    if isinstance(error, OSError):  # one the code did not expect, still named by its path
        where = f"{error.filename}: " if error.filename else ""
        report_error(f"{where}{error.strerror or bug_line(error)}")
    else:
        report_error(f"internal error: {bug_line(error)} (MINIBOX_DEBUG=1 shows the traceback)")
    return RUNTIME_ERROR


# --log FILE: errors go there too, as runc writes them. containerd's shim reads the last
# JSON line's "msg" into the error it reports ("OCI runtime create failed: <msg>"), and
# fails with "log.json: no such file or directory" when the file is missing: so it is made
# at once, even when nothing goes wrong.
_runtime_log = None


def open_runtime_log(path, log_format):
    global _runtime_log
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644))
    except OSError as error:
        raise MiniboxError(f"--log {path}: {error.strerror}") from None
    _runtime_log = (path, log_format)


def report_error(message):
    """One line on stderr, `minibox: <message>`; with --log, into that file too."""
    print(f"minibox: {message}", file=sys.stderr)
    if _runtime_log is None:
        return
    import json
    import time
    path, log_format = _runtime_log
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = (json.dumps({"level": "error", "msg": message, "time": now}) if log_format == "json"
            else f"time={json.dumps(now)} level=error msg={json.dumps(message)}")
    try:
        with open(path, "a") as log:
            log.write(line + "\n")
    except OSError:
        pass  # stderr has it already

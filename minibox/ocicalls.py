"""The runtime calls an engine makes for every container -- `create`, `state`, `start`,
`delete`, `kill` -- read without click, and the one-line error contract every command shares.

containerd's shim and conmon call the runtime four or five times per `docker run` (create,
start, state, delete, delete --force, kill): each call is a new process, and click with what
it imports costs more than the call's work (bench/README.md, "Under an engine"). So
`minibox/__main__.py` hands the command line here first. `main` takes only the exact shapes
runc's callers use:

    [--root DIR] [--log FILE] [--log-format text|json] [--debug] [--systemd-cgroup]
        create [-b|--bundle DIR] [--pid-file FILE] [--console-socket PATH]
               [--preserve-fds N] [--no-pivot] [--no-new-keyring] ID
      | state ID | start ID | delete [-f|--force] ID | kill [-a|--all] ID [SIGNAL]

and returns for anything else (`--help`, a typo, Docker's `kill -s C` or `kill C1 C2`, a user
without root), which click then parses, so that bad usage reads the same whichever way it
came in.
"""
import os
import sys

from .errors import RUNTIME_ERROR, MiniboxError, bug_line

_GLOBAL_VALUES = ("--root", "--log", "--log-format")
_GLOBAL_SWITCHES = ("--debug", "--systemd-cgroup")  # accepted for runc's callers (cli/)
# Each command's switches, its options that take a value, and how many operands it takes
# (ID, and kill's SIGNAL). Short forms are read as their long ones.
_COMMANDS = {
    "create": (("--no-pivot", "--no-new-keyring"),
               ("--bundle", "--pid-file", "--console-socket", "--preserve-fds"), (1,)),
    "state": ((), (), (1,)), "start": ((), (), (1,)),
    "delete": (("--force",), (), (1,)), "kill": (("--all",), (), (1, 2))}
_SHORT = {"-b": "--bundle", "-f": "--force", "-a": "--all"}


def main(argv):
    """Run an engine's call and exit; return if `argv` is not one this module reads."""
    call = _parse(argv)
    if call is None:
        return
    from . import rootless
    if rootless.ENABLED:
        return  # click's gate says what a user without root may do
    settings, command, options, operands = call
    if command == "create":
        from . import cgroups  # its grace period, paid while the rest imports (__main__.py)
        cgroups.start_grace_period()
    elif command == "kill" and len(operands) == 2:
        from . import control
        if not control.is_signal(operands[1]):
            return  # Docker's `kill C1 C2`: two containers
    try:
        if "--root" in settings:
            from . import state
            state.set_root(os.path.abspath(settings["--root"]))
        if "--log" in settings:
            open_runtime_log(settings["--log"], settings.get("--log-format", "text"))
        code = _run(command, options, operands)
    except KeyboardInterrupt:
        code = 130
    except Exception as error:  # noqa: BLE001 -- failed() names it in one line
        code = failed(error)
    from .shared import exit_now
    exit_now(code)


def _parse(argv):
    """(global settings, command, its options, its operands), or None for another shape.
    A switch given is an option whose value is True."""
    rest = list(argv)
    settings = _options(rest, _GLOBAL_SWITCHES, _GLOBAL_VALUES, stop_at_operand=True)
    if settings is None or settings.get("--log-format", "text") not in ("text", "json") \
            or not rest or rest[0] not in _COMMANDS:
        return None
    command = rest.pop(0)
    switches, values, counts = _COMMANDS[command]
    options, operands = _options(rest, switches, values), rest
    if options is None or len(operands) not in counts \
            or not str(options.get("--preserve-fds", "0")).isdigit():
        return None
    return settings, command, options, operands


def _options(words, switches, values, stop_at_operand=False):
    """Take the options out of `words` (`--name value`, `--name=value`, switches), leaving
    the operands; None if one is not of `switches` or `values`."""
    options, index = {}, 0
    while index < len(words):
        if not words[index].startswith("-"):
            if stop_at_operand:
                break
            index += 1
            continue
        name, equals, value = words.pop(index).partition("=")
        name = _SHORT.get(name, name)
        if name in switches and not equals:
            options[name] = True
        elif name in values and (equals or index < len(words)):
            options[name] = value if equals else words.pop(index)
        else:
            return None
    return options


def _run(command, options, operands):
    if command == "create":
        from . import engine
        engine.create_from_bundle(options.get("--bundle", "."), operands[0],
                                  options.get("--pid-file"), options.get("--console-socket"),
                                  int(options.get("--preserve-fds", 0)))
        return 0
    from . import control
    if command == "state":
        print(control.oci_state(operands[0]))
    elif command == "start":
        control.start(operands[0])
    elif command == "delete":
        control.delete(operands[0], force="--force" in options)
    else:
        signum = control.parse_signal(operands[1] if len(operands) == 2 else "TERM")
        control.kill(operands[0], signum, every_process="--all" in options)
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
    import time

    from . import cjson
    path, log_format = _runtime_log
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    line = (cjson.dumps({"level": "error", "msg": message, "time": now}) if log_format == "json"
            else f"time={cjson.dumps(now)} level=error msg={cjson.dumps(message)}")
    try:
        with open(path, "a") as log:
            log.write(line + "\n")
    except OSError:
        pass  # stderr has it already

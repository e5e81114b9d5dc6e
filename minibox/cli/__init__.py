"""The `minibox` command line: parse flags, call the library, print. No kernel work here.

A click group. Each command lives in a module of this package (run.py, containers.py,
images.py, network.py, oci.py) that is imported only when that command is invoked (click's
LazyGroup pattern, below): `minibox run` loads the command line, run.py and what runs a
container, never what `images` or `network ls` need (check with `python -X importtime -m
minibox run ...`; bench/startup.py measures the start against runc's).

Two things every command declares instead of doing by hand (Command, below):
- `rootless=True`: a user without root may run it (rootless.py); every other command tells
  such a user it needs root, in one line, before it starts.
- its errors: one line on stderr, and Docker's exit status -- the command's own for `run` and
  `exec`; 125 for bad usage (pointing at the command's --help) and minibox's own errors; 126
  when the command cannot be run, 127 when it is not found.

Shell completion is click's: `eval "$(_MINIBOX_COMPLETE=bash_source minibox)"`.
"""
import importlib
import os
import sys

import click

from .. import rootless
from ..errors import RUNTIME_ERROR
from ..ocicalls import failed, open_runtime_log, report_error
from ..shared import exit_now

HELP_WIDTH = 78
# --help only: -h is `run`'s --hostname, as in Docker. A fixed width: asking
# the terminal imports shutil for every start.
CONTEXT = {"help_option_names": ["--help"], "max_content_width": HELP_WIDTH,
           "terminal_width": HELP_WIDTH}


def check_caller(command, allowed):
    """The rootless gate, in one place: rootless.check_caller with the names of the commands
    that declare rootless=True (read only when it refuses: they are in every module)."""
    rootless.check_caller(command, allowed, lambda: _rootless_commands(minibox, ""))


def _rootless_commands(group, prefix):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _rootless_commands(command, f"{prefix}{name} ")
        elif command.rootless:
            yield f"{prefix}{name}"


class Command(click.Command):
    """A minibox command: `rootless` says whether a user without root may run it."""

    def __init__(self, *args, rootless=False, **settings):
        super().__init__(*args, **settings)
        self.rootless = rootless

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:  # some of click's own come without: `run --network`
            error.ctx = error.ctx or ctx  # so main points at this command's --help
            raise

    def invoke(self, ctx):
        check_caller(ctx.command_path.partition(" ")[2], self.rootless)
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # raised by the command itself: its --help too
            error.ctx = error.ctx or ctx
            raise
        except BrokenPipeError:  # `minibox ps | head`: the reader has all it wanted
            raise click.exceptions.Exit(141) from None  # 128 + SIGPIPE, as a shell says


class LazyGroup(click.Group):
    """A group whose commands are imported when invoked: {name: "module:function"}, in the
    order --help lists them. (click's documented pattern: "Lazily Loading Subcommands".)"""

    command_class = Command

    def __init__(self, *args, lazy=None, **settings):
        # no_args_is_help: `minibox` alone is bad usage (one line, 125), not a page of help
        super().__init__(*args, context_settings=CONTEXT, no_args_is_help=False, **settings)
        self.lazy = lazy or {}

    def list_commands(self, ctx):
        return list(self.lazy) + super().list_commands(ctx)

    def get_command(self, ctx, name):
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, _, function = self.lazy[name].partition(":")
        return getattr(importlib.import_module(module, __name__), function)


def command(group=None, name=None, *, options_end_at_argument=False, **settings):
    """@command(rootless=True): a minibox Command, of `group` if given (as `name`). With
    options_end_at_argument, the first argument ends the options: `run busybox ls -l` and
    `exec web ls -l` pass -l to ls."""
    context = dict(CONTEXT, allow_interspersed_args=not options_end_at_argument)
    return (group.command if group else click.command)(name, cls=Command,
                                                       context_settings=context, **settings)


@click.group(cls=LazyGroup, lazy={
    "run": ".run:run", "exec": ".containers:exec_command", "ps": ".containers:ps",
    "logs": ".containers:logs", "stop": ".containers:stop", "kill": ".containers:kill",
    "rm": ".containers:rm", "inspect": ".containers:inspect", "stats": ".containers:stats",
    "gc": ".containers:gc", "images": ".images:list_images", "image": ".images:image",
    "rmi": ".images:rmi", "export": ".images:export", "commit": ".images:commit",
    "network": ".network:network", "create": ".oci:create", "start": ".oci:start",
    "state": ".oci:state", "delete": ".oci:delete", "spec": ".oci:spec",
    "pause": ".oci:pause", "resume": ".oci:resume", "update": ".oci:update",
    "events": ".oci:events", "features": ".oci:features"})
@click.option("--root", metavar="DIR", help="Where container state lives (default "
              "/run/minibox, or $MINIBOX_ROOT; without root $XDG_RUNTIME_DIR/minibox).")
# runc's global flags, which containerd's shim and conmon pass before the command name.
@click.option("--log", metavar="FILE", help="Also write errors to FILE (runc's --log: "
              "engines read the runtime's error from it).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              help="How --log writes: text, or runc's JSON lines (level, msg, time).")
@click.option("--debug", is_flag=True, help="Accepted for runc's callers; changes nothing.")
@click.option("--systemd-cgroup", is_flag=True, help="Accepted for runc's callers: minibox "
              "always writes cgroupfs itself, systemd or not.")
@click.version_option(message="minibox version %(version)s\nspec: 1.0.2",
                      package_name="minibox", help="Print the version, as runc does.")
def minibox(root, log, log_format, debug, systemd_cgroup):
    """minibox: a teaching container runtime (namespaces, cgroups, overlayfs, pivot_root)."""
    if root:
        from .. import state
        state.set_root(os.path.abspath(root))
    if log:
        open_runtime_log(log, log_format)


def main(argv=None):
    """Entry point: one line on stderr and Docker's exit codes instead of tracebacks."""
    try:
        code = minibox.main(argv, prog_name="minibox", standalone_mode=False)
    except click.ClickException as error:  # bad usage: click's own, or a command's
        if isinstance(error, click.NoSuchOption):
            error.possibilities = None  # click's guess says `--log` for any `--bogus`
        where = error.ctx.command_path if getattr(error, "ctx", None) else "minibox"
        message = error.format_message().rstrip(".")
        report_error(f"{message[:1].lower()}{message[1:]} (see: {where} --help)")
        code = RUNTIME_ERROR
    except click.Abort:  # Ctrl-C
        code = 130
    except Exception as error:  # minibox's own, an OSError, a bug: one line (ocicalls)
        code = failed(error)
    if argv is not None:
        sys.exit(code or 0)  # called from Python (tests): a normal exit
    exit_now(code or 0)


def print_table(rows):
    """Columns as wide as their widest cell, as `docker ps` prints them."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(),
              flush=True)


def warn_skipped(skipped):
    """One line per container whose state could not be read; the others are listed."""
    for error in skipped:
        print(f"minibox: skipping {error}", file=sys.stderr)

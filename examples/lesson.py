"""What every lesson shares: say a thing, show the command, run it for real, show its output.

Each lesson is a script run as root from the project's root, e.g.
`sudo .venv/bin/python examples/01_namespaces.py`; the commands it shows are the ones you
can type yourself (`minibox` is `.venv/bin/minibox`).
"""
import importlib.util
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MINIBOX = [sys.executable, "-m", "minibox"]
MINIVM = [sys.executable, "-m", "minivm"]
COMMANDS = {"minibox": MINIBOX, "minivm": MINIVM, "python": [sys.executable]}


def start(title, read_alongside):
    """The lesson's heading; exits with one line when not run as root."""
    if os.geteuid() != 0:
        sys.exit(f"{os.path.basename(sys.argv[0])}: must be run as root (try sudo)")
    print(f"== {title}\n   read alongside: {read_alongside}\n", flush=True)


def say(text):
    print(f"# {text}", flush=True)


def run(program, *args, check_code=None, quiet=False, **kwargs):
    """Show `$ program args`, run it, show what it printed (unless quiet) and its exit code;
    return the CompletedProcess (text). program is "minibox", "minivm" or a host command."""
    argv = COMMANDS.get(program, [program]) + list(args)
    print(f"$ {program} {shlex.join(args)}", flush=True)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    for line in [] if quiet else (result.stdout + result.stderr).splitlines():
        print(f"  {line}")
    print(f"  (exit code {result.returncode})" + ("" if quiet else "\n"), flush=True)
    if check_code is not None and result.returncode != check_code:
        sys.exit(f"expected exit code {check_code}, got {result.returncode}: stopping here")
    return result


def escape_lab():
    """examples/escapes/run.py as a module: lessons 02 and 06 reuse its probes and runner."""
    path = os.path.join(HERE, "escapes", "run.py")
    spec = importlib.util.spec_from_file_location("escape_lab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

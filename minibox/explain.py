"""Narration: `minibox run --explain` prints each step before the code that does it runs.

Every function that performs one isolation step is decorated with @step, which holds the
step's title and the system call it makes (templates filled from the function's arguments) and
the man page to read. With narration off, the decorator costs one extra call. With it on,
the step is printed to stderr together with the file:line of the decorated function, so the
narration *is* the code path: there is no second copy of the story to fall out of date.
`--step` also waits for Enter before each step (read from the terminal kept open below).

minivm narrates its boot with the same lines: steps whose text is only known at run time (a
QEMU option, the kernel it found) go through narrate(), with the file:line of the function
(where) or of the line (caller) that does the work.
"""
import os
import sys

_narrate = False
_steps = []        # every decorated function, to find their source lines up front
_locations = {}    # function -> "file:line", filled while the source is still reachable
_pause_tty = None  # an open /dev/tty when --step asked to pause before each step
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configure(narrate, pause=False):
    """Turn narration on for this process and the container processes it forks."""
    global _narrate, _pause_tty
    _narrate = narrate or pause
    if _narrate:
        # After pivot_root the container can no longer read our source files: look up
        # every step's line now, while they are reachable.
        for func in _steps:
            where(func)
    if pause:
        _pause_tty = open("/dev/tty", "r+b", buffering=0)
        os.set_inheritable(_pause_tty.fileno(), False)


def enabled():
    return _narrate


def step(title, syscall="", man=""):
    """Decorate a function that performs one step; narrate it when narration is on."""
    def decorate(func):
        def narrated(*args, **kwargs):
            if _narrate:
                values = _arguments(func, args, kwargs)
                say(title.format(**values), syscall.format(**values), man, where(func))
            return func(*args, **kwargs)
        # What functools.wraps copies, without importing functools (and collections), which
        # would weigh on the lean monitor of every `run -t`, whose terminal.py imports us.
        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(narrated, name, getattr(func, name))
        narrated.__wrapped__ = func
        _steps.append(func)
        return narrated
    return decorate


def _arguments(func, args, kwargs):
    """The call's arguments by parameter name (inspect.signature would import inspect, a large module)."""
    code = func.__code__
    names = code.co_varnames[:code.co_argcount]
    defaults = func.__defaults__ or ()
    values = dict(zip(names[len(names) - len(defaults):], defaults))
    values.update(zip(names, args))
    values.update(kwargs)
    return values


def where(func):
    """'minibox/rootfs.py:42': the line of the `def` of func, relative to the project."""
    func = getattr(func, "__wrapped__", func)
    if func not in _locations:
        import linecache
        code = func.__code__
        line = code.co_firstlineno  # the first decorator's line; walk down to the def
        for offset in range(20):
            if linecache.getline(code.co_filename, line + offset).lstrip().startswith("def "):
                line += offset
                break
        _locations[func] = _relative(code.co_filename, line)
    return _locations[func]


def caller(depth=1):
    """file:line of the line `depth` frames above the function that calls this: for a step
    that is one line rather than one function (each QEMU option, qemu.option)."""
    frame = sys._getframe(depth + 1)
    return _relative(frame.f_code.co_filename, frame.f_lineno)


def _relative(filename, line):
    return f"{os.path.relpath(filename, _PACKAGE_ROOT)}:{line}"


def narrate(title, man="", source=""):
    """Narrate a step that is not one decorated function, when narration is on. `source`:
    'file:line', or the function whose `def` line to name: where() reads its source file,
    so it is looked up only when narrating (minivm narrates at each boot, mostly unheard)."""
    if _narrate:
        say(title, man=man, source=source if isinstance(source, str) else where(source))


def say(title, syscall="", man="", source=""):
    """Print one narrated step (and pause for Enter under --step)."""
    lines = [f"=> {title}"]
    if syscall:
        lines.append(f"     syscall: {syscall}")
    if man or source:
        lines.append(f"     read:    {man}" + (f"  (code: {source})" if source else ""))
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    if _pause_tty is not None:
        _pause_tty.write(b"     [Enter] ")
        _pause_tty.readline()

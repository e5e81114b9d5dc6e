"""--explain: narrate each step as it happens, with its reference and the code that does it.

Like contained.c's `=> doing X...done.` lines, each step says what minivm does, where that is
documented (a QEMU option, a kernel document, a man page) and which line of minivm does it, so
a reader can go from the narration straight to the code. The lines are printed by minibox's
narration (minibox/explain.py say()), so the two halves read alike.
"""
import sys
from pathlib import Path

from minibox.explain import say

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _location(filename: str, line: int) -> str:
    path = Path(filename)
    try:
        path = path.relative_to(PACKAGE_ROOT)
    except ValueError:
        pass
    return f"{path}:{line}"


def source_location(depth: int = 1) -> str:
    """file:line of the caller `depth` frames up, relative to the project root."""
    frame = sys._getframe(depth + 1)
    return _location(frame.f_code.co_filename, frame.f_lineno)


def code_of(function) -> str:
    """file:line where `function` is defined: the code that does a narrated step."""
    return _location(function.__code__.co_filename, function.__code__.co_firstlineno)


class Narrator:
    """Prints steps on stderr when enabled; a disabled narrator costs one `if` per step."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def step(self, text: str, ref: str = "", where: str = ""):
        if self.enabled:
            say(text, man=ref, source=where or source_location())

    def detail(self, text: str):
        if self.enabled:
            sys.stderr.write(f"     {text}\n")
            sys.stderr.flush()


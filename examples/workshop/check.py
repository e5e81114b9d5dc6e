"""Check a participant's runtime on the real kernel, one line per check.

    sudo .venv/bin/python examples/workshop/check.py LEVEL [FILE]

FILE defaults to the level's mybox.py (examples/workshop/NN_*/mybox.py). Each check runs
FILE as a real container (or VM) and looks at what it printed and what it left on the host:
PASS, or FAIL with what it saw, a hint, and the line of minibox (or minivm) that does the
same step. That line is looked up at run time by the function's name in minibox's narration
table (minibox/explain.py's @step registry, the one --explain prints), so it stays right
when code moves between files. Exit status: 0 when every check passed, 1 otherwise.
"""
import importlib
import os
import pkgutil
import shutil
import sys
import tempfile

import checks
from levels import LEVELS

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the project root: minibox, minivm


def locate(name):
    """'minibox/rootfs.py:343 (pivot_to)': where minibox or minivm defines function `name`,
    or `module.name` when the bare name is not unique. Narrated steps (explain.step) first;
    then any function of that name in either package."""
    from minibox import explain
    module_name, _, function = name.rpartition(".")
    suffix = f".{module_name}" if module_name else ""
    found = {explain.where(func) for func in explain._steps
             if func.__name__ == function and func.__module__.endswith(suffix)}
    for package in ("minibox", "minivm"):
        if found:
            break
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, package + "."):
            if module.name.endswith("__main__") or not module.name.endswith(suffix):
                continue  # importing __main__ would run the CLI
            try:
                func = getattr(importlib.import_module(module.name), function, None)
            except Exception:  # a module that needs what this host lacks: not a step of ours
                continue
            if callable(func) and getattr(func, "__module__", None) == module.name:
                found.add(explain.where(func))
    if len(found) != 1:
        return f"(no function {name} in minibox or minivm, or more than one: " \
            f"{sorted(found)}; the check table needs updating)"
    return f"{found.pop()} ({name})"


def main():
    if len(sys.argv) not in (2, 3) or not sys.argv[1].isdigit() or \
            int(sys.argv[1]) not in LEVELS:
        sys.exit("usage: check.py LEVEL [FILE]  (LEVEL 00 to 09)")
    level = int(sys.argv[1])
    default = os.path.join(HERE, LEVELS[level], "mybox.py")
    program = os.path.abspath(sys.argv[2] if len(sys.argv) == 3 else default)
    if not os.path.isfile(program):
        sys.exit(f"check.py: {program}: no such file (make it: python3 examples/workshop/"
                 f"levels.py start {level:02} > {program})")
    if os.geteuid() != 0:
        sys.exit("check.py: must be run as root (try sudo)")
    scratch = tempfile.mkdtemp(prefix="mybox-check-")
    failed = 0
    try:
        for check in checks.for_level(level, program, scratch):
            ok, saw = check.run()
            if ok:
                print(f"PASS {check.name}")
            else:
                failed += 1
                where = locate(check.minibox)
                print(f"FAIL {check.name}: saw {saw}; hint: {check.hint}; "
                      f"{where.partition('/')[0]} does it at {where}")
            sys.stdout.flush()
    finally:
        checks.clean_up(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""The workshop's levels, and level NN's starting file or solution made from the reference.

    python3 examples/workshop/levels.py start 03 > mybox.py      # level 03's starting file
    python3 examples/workshop/levels.py solution 03 > mybox.py   # level 03 solved
    python3 examples/workshop/levels.py write      # every NN_name/mybox.py, after a change

solutions/mybox.py holds every level's solution once, between `# >>> NN` and `# <<< NN`;
after `# --- NN` come the `#~` lines the starting file has there instead (the TODOs), and
between `# +++ NN` and `# <<< NN` the code given from level NN on, solved or not. Level
NN's starting file is levels before NN solved, NN's TODOs, nothing of later levels; so the
solution of level NN is the starting file of level NN+1 without its TODOs. One source keeps
the ten starting files and ten solutions from drifting apart.
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "solutions", "mybox.py")
LEVELS = {0: "00_fork_exec", 1: "01_uts_pid", 2: "02_mount_pivot_root", 3: "03_overlay",
          4: "04_cgroups", 5: "05_network", 6: "06_security", 7: "07_userns", 8: "08_vm",
          9: "09_raw_kvm"}
MARK = re.compile(r"\s*# (>>>|---|\+\+\+|<<<) (\d\d)$")
PARTS = {">>>": "solution", "---": "todo", "+++": "given", "<<<": None}


def render(level, solved):
    """Level `level`'s starting file (solved=False) or its solution (solved=True)."""
    out, block, part = [], None, None
    with open(REFERENCE) as reference:
        for line in reference:
            mark = MARK.match(line.rstrip("\n"))
            if mark:
                kind, number = mark.group(1), int(mark.group(2))
                part = PARTS[kind]
                block = number if part else None
                continue
            if block is None or (part == "given" and block <= level):
                out.append(line)
            elif part == "solution" and (block < level or (block == level and solved)):
                out.append(line)
            elif part == "todo" and block == level and not solved:
                out.append(line.replace("#~ ", "", 1).replace("#~", "", 1))
    return "".join(out)


def folder(level):
    return os.path.join(HERE, LEVELS[level])


def write_starting_files():
    """Each level's folder's mybox.py: the committed starting files, made again."""
    for level in LEVELS:
        with open(os.path.join(folder(level), "mybox.py"), "w") as starting:
            starting.write(render(level, solved=False))


def main():
    if sys.argv[1:] == ["write"]:
        return write_starting_files()
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "solution") or \
            not sys.argv[2].isdigit() or int(sys.argv[2]) not in LEVELS:
        sys.exit("usage: levels.py start|solution LEVEL (00 to 09), or levels.py write")
    sys.stdout.write(render(int(sys.argv[2]), sys.argv[1] == "solution"))


if __name__ == "__main__":
    main()

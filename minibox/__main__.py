"""The `minibox` command (and `python -m minibox`): the command line in cli/.

One thing first. Moving a container's init into its cgroup waits for an RCU grace period
(cgroups/grace.py); the sooner a thread starts paying it, the less of it `run` waits for.
So a plain `minibox run` starts that thread here, before importing the command line
(click and the rest); container.create starts it otherwise (say `minibox --root
DIR run`, or the detached monitor of `run -d`).

The calls an engine makes for every container (create, state, start, delete, kill) are read
by ocicalls.py without click, whose import alone costs more than their work.
"""
import sys


def main():
    if sys.argv[1:2] == ["run"]:
        from minibox import cgroups
        cgroups.start_grace_period()
    from minibox import ocicalls
    ocicalls.main(sys.argv[1:])  # exits if it was one of those calls
    from minibox.cli import main as command_line
    command_line()


if __name__ == "__main__":
    main()

"""The `minibox` command (and `python -m minibox`): the command line in cli/.

Two things first. Moving a container's init into its cgroup waits for an RCU grace period
(cgroups/grace.py); the sooner a thread starts paying it, the less of it `run` waits for.
And a container on the bridge needs pyroute2, slower to import than the rest of a run:
a helper process imports it on the other core (nethelper.py). So a plain `minibox run`
starts both here, before importing the command line (click and the rest);
container.create starts them otherwise (say `minibox --root DIR run`, or the detached
monitor of `run -d`).

The calls an engine makes for every container (state, start, delete, kill) are read by
ocicalls.py without click, whose import alone costs more than their work.
"""
import sys


def main():
    if sys.argv[1:2] == ["run"]:
        from minibox import nethelper
        if nethelper.worth_starting(sys.argv[2:]):
            nethelper.start()  # first: a fork of this process while it is small, no thread yet
        from minibox import cgroups
        cgroups.start_grace_period()
    from minibox import ocicalls
    ocicalls.main(sys.argv[1:])  # exits if it was one of those calls
    from minibox.cli import main as command_line
    command_line()


if __name__ == "__main__":
    main()

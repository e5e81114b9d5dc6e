"""The `minibox` command (and `python -m minibox`): the command line in cli/.

Two things first for a plain `minibox run`, before importing the command line (click and
the rest); container.create starts them otherwise (say `minibox --root DIR run`, or the
detached monitor of `run -d`), later:
- on the bridge, the network helper that imports pyroute2 on the other core
  (nethelper.py): that import is what such a run waits for longest;
- a thread that pays the RCU grace period which moving the init into its cgroup waits for
  (cgroups/grace.py): the sooner it starts, the less of it `run` waits for.

The calls an engine makes for every container (create, state, start, delete, kill) are read
by ocicalls.py without click, whose import alone costs more than their work.
"""
import sys


def main():
    if sys.argv[1:2] == ["run"]:
        from minibox import nethelper
        nethelper.start_for_run(sys.argv[2:])
        from minibox import cgroups
        cgroups.start_grace_period()
    from minibox import ocicalls
    ocicalls.main(sys.argv[1:])  # exits if it was one of those calls
    from minibox.cli import main as command_line
    command_line()


if __name__ == "__main__":
    main()

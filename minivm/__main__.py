"""The `minivm` command (and `python -m minivm`): most runs in runcall.py, without click; every
other command line in cli.py."""
import sys
import time


def main():
    started = time.monotonic()
    from minivm import runcall
    runcall.main(sys.argv[1:], started)  # exits if it read the command line
    from minivm.cli import main as command_line
    command_line(started=started)


if __name__ == "__main__":
    main()

"""minibox as an engine's runtime: `docker run --rm --runtime minibox busybox true` against
`--runtime runc`, and the same through podman (conmon).

The engines are the test suite's own (tests/engines/conftest.py): a private dockerd on its
own socket with no host network, a podman with its own storage, the busybox-static image
imported from a tarball. Runs are interleaved (startup.py's measure), so a noisy moment hits
both runtimes alike; the table shows medians and the ratio to runc. Run as root:
`sudo .venv/bin/python bench/engines.py [-n 20]`.
"""
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from startup import measure, prepare  # noqa: E402
from tests.engines import conftest  # noqa: E402


@contextlib.contextmanager
def engine(fixture, rootfs_tar):
    """A test fixture's engine (its generator, outside pytest): yields its command line."""
    running = fixture.__wrapped__(rootfs_tar)
    argv, _ = next(running)
    try:
        yield argv
    finally:
        next(running, None)  # its teardown: stop dockerd, remove the temp dirs


def main():
    runs, _ = prepare("bench/engines.py", __doc__)
    rootfs_tar = conftest.busybox_rootfs_tar()
    command = ["--rm", "--network", "none", *conftest.ULIMITS, conftest.IMAGE, "true"]
    for name, fixture in (("docker", conftest.dockerd), ("podman", conftest.podman_argv)):
        with engine(fixture, rootfs_tar) as argv:
            tools = {runtime: lambda _, runtime=runtime, argv=argv: [
                *argv, "run", "--runtime",
                runtime if name == "docker" else conftest.RUNTIMES[runtime], *command]
                for runtime in ("minibox", "runc")}
            medians = measure(tools, runs)
        print(f"{name} run --rm busybox true ({runs} runs each, interleaved, medians)")
        for runtime, median in medians.items():
            print(f"  {runtime:8} {median:7.1f} ms")
        print(f"  minibox/runc = {medians['minibox'] / medians['runc']:.2f}x")


if __name__ == "__main__":
    main()

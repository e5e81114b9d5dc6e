"""minibox as an engine's runtime: `docker run --rm --runtime minibox busybox true` against
`--runtime runc`, and the same through podman (conmon).

The engines are the test suite's own (tests/harness.py, tests/engines/conftest.py): a private dockerd on its
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
from tests import harness  # noqa: E402
from tests.engines import conftest  # noqa: E402


@contextlib.contextmanager
def podman(rootfs_tar):
    """The podman test fixture (its generator, outside pytest): yields (argv, temp dir)."""
    running = conftest.podman_argv.__wrapped__(rootfs_tar)
    yield next(running)
    next(running, None)  # its teardown: remove the storage and temp dirs


def main():
    runs, _ = prepare("bench/engines.py", __doc__)
    rootfs_tar = harness.busybox_rootfs_tar()
    command = ["--rm", "--network", "none", *harness.ULIMITS, harness.ENGINE_IMAGE, "true"]
    for name, engine in (("docker", harness.private_dockerd), ("podman", podman)):
        with engine(rootfs_tar) as (argv, _):
            tools = {runtime: lambda _, runtime=runtime, argv=argv: [
                *argv, "run", "--runtime",
                runtime if name == "docker" else harness.RUNTIMES[runtime], *command]
                for runtime in ("minibox", "runc")}
            medians = measure(tools, runs)
        print(f"{name} run --rm busybox true ({runs} runs each, interleaved, medians)")
        for runtime, median in medians.items():
            print(f"  {runtime:8} {median:7.1f} ms")
        print(f"  minibox/runc = {medians['minibox'] / medians['runc']:.2f}x")


if __name__ == "__main__":
    main()

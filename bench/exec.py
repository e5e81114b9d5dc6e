"""Joining a running container: `minibox exec ID true` against `runc exec ID true`.

Both containers run `sleep` from the same busybox root filesystem (minibox's image store);
each exec joins the container's namespaces and cgroups, runs /bin/true in it and waits for
it. Runs are interleaved, so a noisy moment of the machine hits both alike; the table shows
medians and the ratio to runc. Run as root: `sudo .venv/bin/python bench/exec.py [-n 40]`.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from startup import PROJECT, measure, oci_bundle, prepare, report  # noqa: E402


def sleeping_bundle(rootfs, workdir):
    """startup.py's bundle, running `sleep` instead of `true`."""
    oci_bundle(rootfs, workdir)
    path = os.path.join(workdir, "config.json")
    with open(path) as config_file:
        config = json.load(config_file)
    config["process"]["args"] = ["sleep", "3600"]
    with open(path, "w") as config_file:
        json.dump(config, config_file)
    return workdir


def main():
    runs, rootfs = prepare("bench/exec.py", __doc__)
    minibox = os.path.join(PROJECT, ".venv/bin/minibox")
    with tempfile.TemporaryDirectory(dir="/run") as state, \
            tempfile.TemporaryDirectory() as workdir:
        os.environ["MINIBOX_ROOT"] = state  # a private state dir; the image store is shared
        # --network none: like runc's default config (and no bridge left on the host)
        container_id = subprocess.run([minibox, "run", "-d", "--network", "none", "busybox",
                                       "sleep", "3600"],
                                      capture_output=True, text=True, check=True).stdout.strip()
        runc_id = f"bench-exec-{os.getpid()}"
        subprocess.run(["runc", "run", "-d", "--bundle", sleeping_bundle(rootfs, workdir),
                        runc_id], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        try:
            tools = {"minibox": lambda i: [minibox, "exec", container_id, "true"],
                     "runc": lambda i: ["runc", "exec", runc_id, "true"]}
            measure(tools, 3)  # warm the page cache
            medians = measure(tools, runs)
        finally:
            subprocess.run([minibox, "rm", "-f", container_id], capture_output=True)
            subprocess.run(["runc", "delete", "--force", runc_id], capture_output=True)
    report(f"median of {runs} interleaved runs, exec /bin/true in a running busybox:", medians)


if __name__ == "__main__":
    main()

"""`minivm gc`: collect what minivm runs that were killed (SIGKILL, a crash) left behind.

A killed minivm runs no cleanup, but what it made says whose it is:
- a detached VM's directory without "started" whose starter is gone (vms.py): its QEMU
  is killed if it still runs, its address released, its directory removed;
- an address lease of an owner named minivm-... whose tap is gone (bridge.live_ports): a
  tap lives exactly as long as a descriptor on it, so a lease without one is a dead run's;
- $TMPDIR files named after a run's pid, its initramfs (initramfs.write_initrd) and a
  foreground run's disk overlays (vm._attach_devices), when no process has that pid.
Running and exited VMs that were started completely stay: `minivm rm` removes those.
And one thing no run leaves by dying: base initramfs archives in the cache that this minivm
would not use (initramfs.prune_bases: other busybox or minivm versions, 2 MB each).
"""
import os
import re
from pathlib import Path

from minibox.shared import process_start_time

# minivm-initrd-<pid>-<nonce>.cpio, minivm-<pid>-<nonce>-disk<N>.qcow2
SCRATCH_FILE = re.compile(r"minivm-(?:initrd-)?(\d+)-[0-9a-f]+[-.]")


def collect() -> list[str]:
    """Collect everything above; returns one line per thing removed."""
    from minibox import bridge
    from minivm import initramfs, kernel, vms
    return ([f"removed the half-made VM {name}" for name in vms.collect_half_made()]
            + [f"released the address of {owner}"
               for owner in bridge.release_dead_leases("minivm-")]
            + [f"removed {path}" for path in collect_scratch_files()]
            + [f"removed {path}" for path in initramfs.prune_bases(kernel.cache_dir())])


def collect_scratch_files(directory: Path | None = None) -> list[Path]:
    """Remove the scratch files of runs whose pid no process has any more."""
    directory = directory or Path(os.environ.get("TMPDIR", "/tmp"))
    removed = []
    for path in directory.glob("minivm-*"):
        found = SCRATCH_FILE.match(path.name)
        if found and process_start_time(int(found.group(1))) is None:
            path.unlink(missing_ok=True)
            removed.append(path)
    return sorted(removed)

"""Download and unpack Debian's kernel package: `apt-get download` + `dpkg-deb -x`.

Used by kernel.fetch when no kernel is at hand, or for `minivm kernel fetch`. The package
that the meta-package linux-image-amd64 depends on is the current stock kernel, e.g.
linux-image-6.1.0-56-amd64 (apt-cache depends). `apt-get download` fetches the .deb without
installing it (apt-get(8)); `dpkg-deb -x` unpacks its files, boot/vmlinuz-<release> and
lib/modules/<release>/, into a directory of our choosing (dpkg-deb(1)). Then kernel.fetch
has bzimage.py take the uncompressed vmlinux out, once, and keeps the tree in its cache.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from minivm import MinivmError

DEBIAN_META_PACKAGE = "linux-image-amd64"


def apt_available() -> bool:
    return shutil.which("apt-get") is not None


def debian_package() -> str:
    """The versioned package that linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64."""
    machine = os.uname().machine
    if machine != "x86_64":
        raise MinivmError(f"minivm boots x86_64 guests; this host is {machine}")
    if shutil.which("apt-cache") is None:
        raise MinivmError("no apt-cache: cannot find Debian's kernel package; pass --kernel PATH")
    depends = subprocess.run(["apt-cache", "depends", DEBIAN_META_PACKAGE],
                             capture_output=True, text=True)
    found = re.search(r"Depends: (linux-image-\S+)", depends.stdout)
    if not found:
        raise MinivmError(f"apt-cache does not know {DEBIAN_META_PACKAGE}: "
                          "run `apt-get update` first")
    return found.group(1)


def download(package: str, scratch: Path, progress) -> tuple[str, Path, Path]:
    """`apt-get download` the package into `scratch` and `dpkg-deb -x` it there.
    Returns (the .deb's name, the unpacked tree, its boot/vmlinuz-*)."""
    progress(f"downloading {package} with apt-get (Debian's kernel package, ~70 MB)")
    # As root apt drops to the _apt user to download, which can't write into our private
    # directory; APT::Sandbox::User=root keeps it root for this one download.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    _run_visibly(["apt-get", "download", *sandbox, package], scratch)
    debs = list(scratch.glob("*.deb"))
    if not debs:
        raise MinivmError(f"apt-get download {package} produced no .deb")
    progress(f"unpacking {debs[0].name} with dpkg-deb -x (kernel and modules)")
    tree = scratch / "tree"
    _run_visibly(["dpkg-deb", "-x", str(debs[0]), str(tree)], scratch)
    images = sorted((tree / "boot").glob("vmlinuz-*"))
    if not images:
        raise MinivmError(f"{debs[0].name} holds no boot/vmlinuz-*")
    return debs[0].name, tree, images[0]


def _run_visibly(argv: list[str], cwd: Path):
    """Run a fetch step with its output on stderr (stdout belongs to the guest command)."""
    try:
        done = subprocess.run(argv, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr)
    except OSError as error:
        raise MinivmError(f"cannot run {argv[0]}: {error.strerror}") from None
    if done.returncode:
        raise MinivmError(f"`{' '.join(argv)}` failed with exit status {done.returncode}")

"""The image store: read-only layers that containers stack an overlay on, and image configs.

An image is a config (JSON: what to run, its environment, and rootfs.diff_ids, the sha256 of
each uncompressed layer tar, bottom first) plus those layers. The image id is the sha256 of
the config file, stored verbatim, as Docker does. Each layer is unpacked once, into a
directory named by its diff_id, whatever image or archive brought it (content addressed), and
is never written again: every container gets its own writable layer on top
(rootfs.mount_overlay). Layout under MINIBOX_STORE (default /var/lib/minibox, mode 0700:
layers keep their setuid binaries, which no host user may reach; without root the user's
own, rootless.image_store):

    images/<id>.json         image configs          repositories.json  NAME:TAG -> id
    layers/<diff_id>/diff/   the unpacked layer     layers/<diff_id>/link, size
    l/<short> -> ../layers/<diff_id>/diff           tmp/  imports in progress
    lock                     flock(2)ed while the store changes

Why l/: mount(2) copies at most one page (4096 bytes) of options (copy_mount_options), and
overlayfs takes all lower layers in that one string. At ~90 bytes per
/var/lib/minibox/layers/<64 hex>/diff only ~40 layers would fit; the 10-character links in l/
(Docker's overlay2 driver does the same) fit ~100 in store.LOWERDIR_BUDGET. An image with
more layers than fit is flattened at import: its lowest layers are merged into one by the
kernel itself (a read-only overlay of them, mounted in a private mount namespace, packed into
a new layer), like `docker export | docker import` of just those layers.

A container resolves its image once, when it is created (docker.resolve_image): it keeps the
image id and the layer directories in its spec, and every later step -- a restart, commit,
export, rmi's "is it in use?" -- uses those, whatever the name points at by then.

The package: this module is the read side, on the path of every `minibox run`, so it stays
light (no hashlib, no tarfile) and imports nothing of the others. Writing the store (import,
commit, rmi, the built-in busybox image) is store.py; what `docker save` archives and OCI
layouts hold is archives.py; unpacking layer tarballs safely is layers.py.
"""
import json
import os

from .. import rootless
from ..errors import MiniboxError

STORE = os.environ.get("MINIBOX_STORE") or (rootless.image_store() if rootless.ENABLED
                                            else "/var/lib/minibox")
IMAGES = os.path.join(STORE, "images")
LAYERS = os.path.join(STORE, "layers")
SHORT_LINKS = os.path.join(STORE, "l")
SCRATCH = os.path.join(STORE, "tmp")
REPOSITORIES = os.path.join(STORE, "repositories.json")
BUSYBOX = "busybox:latest"
# A first component is a registry host (any case) only if it has a dot or a port, or is
# localhost: Docker's rule, so "Team/app" is an invalid name rather than a host "Team".
_NAME = (r"(?:(?:[A-Za-z0-9-]+\.[A-Za-z0-9.-]+|localhost)(?::[0-9]+)?/|[A-Za-z0-9-]+:[0-9]+/)?"
         r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_HEX = frozenset("0123456789abcdef")

# -- references and lookup -------------------------------------------------------------------

def normalize(reference):
    """NAME[:TAG] -> "name:tag" (tag "latest" by default; docker.io/library/ dropped, so an
    archive's "docker.io/library/busybox:1.36" is "busybox:1.36" here, as in `docker images`)."""
    name, tag = reference, "latest"
    if ":" in reference.rsplit("/", 1)[-1]:
        name, tag = reference.rsplit(":", 1)
    return f"{name.removeprefix('docker.io/').removeprefix('library/')}:{tag}"


def parse_reference(text):
    """normalize(), after checking the name and tag are ones Docker would accept."""
    import re
    name, tag = normalize(text).rsplit(":", 1)
    if not re.fullmatch(_NAME, name) or not re.fullmatch(_TAG, tag):
        raise MiniboxError(f"invalid image reference {text!r}: expected NAME[:TAG] "
                           "(lowercase name, tag of letters, digits, _ . -)")
    return f"{name}:{tag}"


def load_repositories():
    try:
        with open(REPOSITORIES) as tags:
            return json.load(tags)
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise MiniboxError(f"cannot read the image store {STORE}: it is another user's "
                           "(set MINIBOX_STORE to a directory of yours)") from None


class NoSuchImage(MiniboxError):
    """No image has that name or id prefix."""


def resolve(reference, repositories=None):
    """The image id a reference names: a NAME[:TAG] or a unique prefix of an image id."""
    repositories = load_repositories() if repositories is None else repositories
    name = normalize(reference)
    if name in repositories:
        return repositories[name]
    prefix = "sha256:" + reference.removeprefix("sha256:")
    if len(prefix) >= 11 and set(prefix[7:]) <= _HEX:
        matches = [image_id for image_id in all_image_ids() if image_id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
    raise NoSuchImage(f"no such image: {reference} (`minibox images` lists them; "
                      "`minibox image import FILE` adds one)")


def all_image_ids():
    try:
        names = os.listdir(IMAGES)
    except FileNotFoundError:
        return []
    # Only <64 hex>.json: not a config being written (.tmp), nor the foundation's old
    # images/busybox/rootfs tree that stores made before this layout still hold.
    return ["sha256:" + name[:-5] for name in names
            if name.endswith(".json") and len(name) == 69 and set(name[:-5]) <= _HEX]


def load_config(image_id):
    with open(os.path.join(IMAGES, image_id.removeprefix("sha256:") + ".json"), "rb") as config:
        return json.load(config)


def layers_of(image_id):
    """The image's layer directories, top layer first (overlayfs' lowerdir order)."""
    config = load_config(image_id)
    return [layer_path(diff_id) for diff_id in stack(config["rootfs"]["diff_ids"])]


def stack(diff_ids):
    """diff_ids (bottom first) as overlay lowers: top first, each layer once. Images often
    hold the same layer twice (every build step that changed nothing is the same empty tar),
    and overlayfs refuses a directory given twice. Keeping only the topmost copy changes
    nothing: whatever the copy below would show or hide, the same copy above does too."""
    return list(dict.fromkeys(reversed(diff_ids)))


def run_settings(image_id):
    """The image's run settings: the "config" of its config (Entrypoint, Cmd, Env,
    WorkingDir, User...)."""
    return load_config(image_id).get("config") or {}


def layer_path(diff_id):
    with open(os.path.join(LAYERS, diff_id.removeprefix("sha256:"), "link")) as link:
        return os.path.join(SHORT_LINKS, link.read().strip())


def command_for(config, args, entrypoint=None):
    """Docker's rule: ENTRYPOINT + CMD, where arguments after the image replace CMD and
    `--entrypoint` replaces ENTRYPOINT *and* drops CMD (`--entrypoint ""` clears it)."""
    if entrypoint is not None:
        head, default = ([entrypoint] if entrypoint else []), []
    else:
        head, default = config.get("Entrypoint") or [], config.get("Cmd") or []
    return list(head) + (list(args) or list(default))


def environment_of(config):
    """The image's Env ["KEY=VALUE", ...] as a dict."""
    return dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)


# -- listing ---------------------------------------------------------------------------------

def list_images():
    """[(name:tag or None, image id, layer count, bytes)] for every stored image."""
    repositories = load_repositories()
    tagged = {image_id for image_id in repositories.values()}
    rows = [(name, image_id) for name, image_id in sorted(repositories.items())]
    rows += [(None, image_id) for image_id in all_image_ids() if image_id not in tagged]
    listing = []
    for name, image_id in rows:
        diff_ids = load_config(image_id)["rootfs"]["diff_ids"]
        listing.append((name, image_id, len(diff_ids), sum(map(_layer_size, diff_ids))))
    return listing


def _layer_size(diff_id):
    with open(os.path.join(LAYERS, diff_id.removeprefix("sha256:"), "size")) as size:
        return int(size.read())

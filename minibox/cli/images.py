"""Image commands: `image import`, `image build`, images, rmi, export, commit."""
import sys

import click

from . import LazyGroup, command
from ..errors import MiniboxError


@click.group(cls=LazyGroup)
def image():
    """Manage images: import archives, build the built-in busybox image."""


class ByteSize(click.ParamType):
    """`--max-size 20g`: a size in the units of `run -m` (binary: k = 1024)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from ..cgroups.limits import parse_size
        try:
            return value if isinstance(value, int) else parse_size(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)


@command(image, "import")
@click.option("--name", metavar="NAME[:TAG]", help="Tag the image (default: the archive's tags).")
@click.option("--max-size", type=ByteSize(), default="10g",
              help="Refuse an archive whose layers hold more file data than SIZE (default 10g; "
                   "holes in sparse files do not count).")
@click.argument("archive", metavar="ARCHIVE")
def image_import(name, max_size, archive):
    """Import a `docker save` archive, an OCI image layout or a rootfs tarball (file or dir).

    The layers' tar headers are read first: an archive that claims more than --max-size, or
    more than the image store has free, is refused before anything is written."""
    from ..images import store
    progress = store.Progress(sys.stderr)
    for names, image_id in store.import_archive(archive, max_size, name, progress):
        for tagged in names or ["<untagged>"]:
            print(f"Loaded image: {tagged} ({image_id[:19]})")


@command(image, "build", rootless=True)
@click.argument("which", type=click.Choice(["busybox"]), metavar="IMAGE")
def image_build(which):
    """(Re)build a built-in image from the host: busybox (the only one) from busybox-static."""
    from .. import images
    from ..images import store
    image_id = store.build_busybox_image(store.Progress(sys.stderr))
    print(f"Built image: {images.BUSYBOX} ({image_id[:19]})")


@command(rootless=True)
def list_images():
    """List stored images."""
    from .. import images
    print(f"{'REPOSITORY':<30} {'TAG':<16} {'IMAGE ID':<12} {'LAYERS':>6} {'SIZE':>10}")
    for name, image_id, layer_count, size in images.list_images():
        repository, tag = name.rsplit(":", 1) if name else ("<none>", "<none>")
        print(f"{repository:<30} {tag:<16} {image_id[7:19]:<12} {layer_count:>6} "
              f"{size / 1e6:>8.1f}MB")


@command(rootless=True)
@click.argument("references", nargs=-1, required=True, metavar="IMAGE...")
def rmi(references):
    """Remove images (untag; delete the layers no other image uses)."""
    from ..images import store
    for reference in references:
        image_id = store.remove_image(reference)
        print(f"Removed: {reference} ({image_id[:19]})")


@command()
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
@click.argument("reference", metavar="CONTAINER")
def export(output, reference):
    """Write a container's filesystem as a tar archive (to stdout or -o FILE)."""
    from ..images import store
    if output is None and sys.stdout.isatty():
        raise MiniboxError("refusing to write a tar archive to a terminal: "
                           "redirect stdout or use -o FILE")
    store.export_container(reference, output)


@command()
@click.argument("reference", metavar="CONTAINER")
@click.argument("name", metavar="NAME[:TAG]")
def commit(reference, name):
    """Make a new image from a container: its changes become a new top layer."""
    from ..images import store
    image_id = store.commit_container(reference, name, store.Progress(sys.stderr))
    print(image_id)

"""Free page reporting: a detached guest gives the host back the memory it freed.

Guest RAM is host memory that QEMU allocated and the guest touched; when the guest frees a
page, the host cannot know, and the page stays resident in QEMU for the VM's life. A
virtio balloon device with free page reporting (QEMU hw/virtio/virtio-balloon.c,
`free-page-reporting=on`) lets the guest say so: the guest's driver
(drivers/virtio/virtio_balloon.c) hands mm/page_reporting.c's lists of free blocks to the
device, and QEMU discards their host pages (madvise(2) MADV_DONTNEED), so they cost nothing
until the guest uses them again.

What a booted guest frees is small pieces: the gaps x86 frees around the kernel's rodata
(mark_rodata_ro), its init memory, the initramfs archive once unpacked. Linux reports only
free blocks of 2^page_reporting_order pages, and 6.1 sets that order to pageblock_order (4
MiB here) when the driver registers, whatever the command line said; so /init lowers it to
0 (every free page) through the parameter's sysfs file (initramfs.py), and two seconds
later (PAGE_REPORTING_DELAY) the host has those pages back (bench/README.md, "VM memory",
says how much of an idle tiny-kernel VM).

Only a detached VM gets the device, and only on a kernel with the driver built in (the
tiny one, minivm/tiny.config): a foreground run ends before the reporting would start.
"""
from minivm import kernel
from minivm.qemu import Option, option


def supported(guest_kernel: kernel.Kernel) -> bool:
    """Does the kernel have the balloon driver built in (its .config says so)?"""
    config = kernel.config_text(guest_kernel)
    return config is not None and "CONFIG_VIRTIO_BALLOON=y" in config.splitlines()


def options() -> list[Option]:
    """The device, on microvm's virtio-mmio bus like the others."""
    return [option("-device", "virtio-balloon-device,free-page-reporting=on",
                   why="free page reporting: the guest tells QEMU which pages it freed, and "
                   "QEMU gives them back to the host (an idle VM keeps less resident)",
                   doc="QEMU hw/virtio/virtio-balloon.c; Linux mm/page_reporting.c")]


"""Kernel modules for the guest: dependencies from .modinfo, load order, ACPI or command line."""
import pytest

from minivm import MinivmError, kernel, modules


@pytest.fixture
def debian_tree():
    cached = [entry for entry in kernel.cached_kernels(kernel.cache_dir()) if entry.modules]
    if not cached:
        pytest.skip("no cached Debian kernel package (`minivm kernel fetch`)")
    return modules.ModuleTree(cached[0].modules)


def test_dependencies_come_before_the_modules_that_need_them(debian_tree):
    order = [name for name, _ in debian_tree.load_order(["virtio_blk", "ext4"])]
    assert order.index("virtio") < order.index("virtio_blk")
    assert order.index("virtio_ring") < order.index("virtio")
    assert order.index("jbd2") < order.index("ext4") and "mbcache" in order
    assert len(order) == len(set(order))


def test_modinfo_reads_the_elf_section(debian_tree):
    ((name, image),) = debian_tree.load_order(["virtio_ring"])
    info = modules.modinfo(image)
    assert info["name"] == "virtio_ring" and info["license"] == "GPL"
    assert info["vermagic"].startswith(debian_tree.directory.name)


def test_an_unknown_module_is_a_clear_error(debian_tree):
    with pytest.raises(MinivmError, match="the guest kernel has no module no_such_driver"):
        debian_tree.load_order(["no_such_driver"])


def test_without_a_module_directory_everything_is_built_in():
    assert modules.ModuleTree(None).load_order(["virtio_blk"]) == []

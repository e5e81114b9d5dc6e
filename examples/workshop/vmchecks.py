"""Levels 08 and 09: the VM side (a kernel, a Python initramfs, QEMU; raw /dev/kvm)."""

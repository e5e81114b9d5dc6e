"""minivm: boot a tiny guest kernel under QEMU and run one command in it."""

"""Lesson 07: a virtual machine from three files: a kernel, an initramfs and QEMU.

minivm boots a Linux kernel -- the tiny one once `minivm kernel build` made it, else Debian's
stock kernel -- as an uncompressed vmlinux, through its PVH entry point,
on QEMU's minimal `microvm` machine, with an initramfs it writes itself in Python (a cpio
archive: busybox-static and an /init that runs your command, prints its exit code in a
marker line and powers off). Unlike a container, the guest has its own kernel: its own
processes, devices, mounts, clock, and kernel settings. Devices are QEMU options too:
`-v HOSTDIR:GUESTDIR` shares a folder over virtio-9p (minivm/shares.py) and `--network
bridge` adds a virtio NIC on a tap in minibox0 (minivm/nic.py; lesson 05 shows it).

    sudo .venv/bin/python examples/07_vm.py
"""
import lesson


def main():
    lesson.start("Lesson 07: a VM from kernel + initramfs + QEMU",
                 "minivm/vm.py (the run's story), minivm/kernel.py (which kernel), "
                 "minivm/initramfs.py (the cpio writer and /init), minivm/qemu.py (every QEMU "
                 "option and why), minivm/console.py")
    lesson.say("The kernels minivm can boot (fetched once from Debian's linux-image package):")
    lesson.run("minivm", "kernel", "list")
    lesson.say("--explain narrates the boot: each QEMU option and kernel parameter, its "
               "documentation, the line of code that adds it; [guest] lines are the kernel's.")
    explained = lesson.run("minivm", "run", "--explain", "--", "uname", "-a", quiet=True)
    print("  " + explained.stdout.strip())
    kernel_lines = [line for line in explained.stderr.splitlines() if line.startswith("[guest]")]
    for line in explained.stderr.splitlines():
        if not line.startswith("[guest]"):
            print(f"  {line}")
    print(f"  {kernel_lines[0]}\n  ... {len(kernel_lines) - 2} more kernel lines ...\n"
          f"  {kernel_lines[-1]}\n", flush=True)
    lesson.say("The guest's exit code is minivm's; --timings shows where the time goes "
               "(TCG: QEMU translates every guest instruction, no KVM here).")
    lesson.run("minivm", "run", "--timings", "--", "sh", "-c",
               "echo kernel command line: $(cat /proc/cmdline); exit 3")
    lesson.say("Devices are more QEMU options: -v HOSTDIR:GUESTDIR (virtio-9p, minivm/shares.py) "
               "and --network bridge (virtio-net on a tap in minibox0, minivm/nic.py: lesson 05).")


if __name__ == "__main__":
    main()

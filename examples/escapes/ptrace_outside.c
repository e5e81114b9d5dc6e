/* ptrace(2) reads and writes another process's memory and registers. A process outside the
 * container has no PID inside it (the PID namespace: ESRCH); and ptrace itself is refused
 * by seccomp (EPERM), even on the container's own processes.
 * usage: ptrace_outside HOST_PID */
#include "probe.h"
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    pid_t host_pid = atoi(argv[1]);
    if (ptrace(PTRACE_ATTACH, host_pid, 0, 0) == 0)
        escaped("attached to host process %d", host_pid);
    printf("ptrace(PTRACE_ATTACH, host pid %d): %s\n", host_pid, strerrorname_np(errno));
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    long result = ptrace(PTRACE_ATTACH, child, 0, 0);
    int error = errno;
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    errno = error;
    if (result != 0)
        blocked("ptrace(PTRACE_ATTACH, own child)");
    escaped("ptrace attached to pid %d (its own child; the host's PIDs stay out of reach)", child);
}

/* Shared by every escape probe: one line of verdict, and an exit code the runner reads.
 *   exit 0  "ESCAPED: ..."  the container reached something of the host's
 *   exit 1  "BLOCKED: ..."  a protection stopped it; the line names the call and its errno
 *   exit 2  the probe could not run (bad arguments, refused for safety)
 * Each probe is built with `gcc -static` so it runs in any image, busybox included. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline __attribute__((noreturn)) void escaped(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    printf("ESCAPED: ");
    vprintf(format, args);
    printf("\n");
    va_end(args);
    exit(0);
}

/* Report the errno of the call that failed, by name (EPERM) and text. */
static inline __attribute__((noreturn)) void blocked(const char *call)
{
    int error = errno;
    printf("BLOCKED: %s: %s (%s)\n", call, strerrorname_np(error), strerror(error));
    exit(1);
}

/* Which shared object does `malloc` resolve to in this process? Prints its
 * path, so that a comparison can check the allocator under test is the one
 * running. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    void *m = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    if (!m || !dladdr(m, &info) || !info.dli_fname) return 1;
    void *p = malloc(100); /* and it serves a call */
    printf("%s\n", info.dli_fname);
    free(p);
    return 0;
}

/* libhakmem.so dlopen'ed late (not preloaded): threads that existed before
 * the dlopen and threads created after it allocate through the library's
 * functions, free each other's blocks, and exit (running the library's
 * thread-exit destructor). The C library's own malloc keeps working. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef void *(*realloc_fn)(void *, size_t);
typedef int (*memalign_fn)(void **, size_t, size_t);
typedef size_t (*usable_fn)(void *);

static malloc_fn hk_malloc;
static free_fn hk_free;
static realloc_fn hk_realloc;
static memalign_fn hk_posix_memalign;
static usable_fn hk_usable;

#define EARLY 2
#define LATE 3
#define N 5000
static void *shared[EARLY + LATE][N];
static pthread_barrier_t loaded, done_alloc;

static void fail(const char *what) {
    fprintf(stderr, "dlopen: %s\n", what);
    exit(1);
}

static void work(int id) {
    for (int i = 0; i < N; i++) {
        size_t n = (size_t)(i * 131 + id) % (i % 100 == 0 ? 300000 : 3000);
        unsigned char *p = hk_malloc(n + 1);
        if (!p || (n + 1 > 8 && (uintptr_t)p % 16) || hk_usable(p) < n + 1) fail("bad block");
        memset(p, id + 1, n + 1);
        shared[id][i] = p;
    }
    void *a;
    if (hk_posix_memalign(&a, 4096, 100) || (uintptr_t)a % 4096) fail("posix_memalign");
    char *r = hk_realloc(a, 100000);
    if (!r) fail("realloc");
    hk_free(r);
    pthread_barrier_wait(&done_alloc);
    int other = (id + 1) % (EARLY + LATE);
    for (int i = 0; i < N; i++) {
        unsigned char *p = shared[other][i];
        if (p[0] != other + 1) fail("corrupted block");
        hk_free(p);
    }
}

static void *early(void *arg) {
    pthread_barrier_wait(&loaded);
    work((int)(intptr_t)arg);
    return NULL;
}

static void *late(void *arg) {
    work((int)(intptr_t)arg);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) fail("usage: dlopen path/to/libhakmem.so");
    pthread_barrier_init(&loaded, NULL, EARLY + 1);
    pthread_barrier_init(&done_alloc, NULL, EARLY + LATE);
    pthread_t t[EARLY + LATE];
    for (intptr_t i = 0; i < EARLY; i++) pthread_create(&t[i], NULL, early, (void *)i);

    void *glibc_block = malloc(64); /* before the dlopen */
    memset(glibc_block, 7, 64);

    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) fail(dlerror());
    hk_malloc = (malloc_fn)dlsym(h, "malloc");
    hk_free = (free_fn)dlsym(h, "free");
    hk_realloc = (realloc_fn)dlsym(h, "realloc");
    hk_posix_memalign = (memalign_fn)dlsym(h, "posix_memalign");
    hk_usable = (usable_fn)dlsym(h, "malloc_usable_size");
    if (!hk_malloc || !hk_free || !hk_realloc || !hk_posix_memalign || !hk_usable) fail("dlsym");
    if (hk_malloc == malloc) fail("the library's malloc is the C library's");

    pthread_barrier_wait(&loaded);
    for (intptr_t i = EARLY; i < EARLY + LATE; i++) pthread_create(&t[i], NULL, late, (void *)i);
    for (int i = 0; i < EARLY + LATE; i++) pthread_join(t[i], NULL);

    /* A block of the C library handed to hakmem's free is ignored... */
    hk_free(glibc_block);
    for (int i = 0; i < 64; i++)
        if (((unsigned char *)glibc_block)[i] != 7) fail("foreign block touched");
    free(glibc_block); /* ...and still the C library's. */
    char *s = strdup("glibc still allocates");
    puts(s);
    free(s);
    dlclose(h);
    printf("dlopen: %d threads ok\n", EARLY + LATE);
    return 0;
}

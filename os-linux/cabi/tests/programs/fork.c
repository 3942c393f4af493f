/* fork safety: a multi-threaded parent, allocating in every thread, forks in
 * a loop; each child allocates (small, mid and large blocks, on its own
 * thread too) and exits. A deadlock in a child (an allocator lock held by a
 * parent thread at fork time) is caught by the child's alarm. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 100
#define SLOTS 512

static atomic_int stop;

static size_t size_of(uint64_t *rng) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    switch (*rng % 16) {
    case 0: return *rng % (1 << 18);    /* up to Large */
    case 1: case 2: return *rng % 65536; /* Mid */
    default: return *rng % 512;         /* Tiny */
    }
}

static void *churn(void *arg) {
    uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *slot[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t i = rng % SLOTS;
        if (slot[i]) {
            if (len[i] && ((unsigned char *)slot[i])[len[i] - 1] != (unsigned char)len[i]) {
                fprintf(stderr, "fork: corrupted block in the parent\n");
                abort();
            }
            free(slot[i]);
        }
        len[i] = size_of(&rng);
        slot[i] = malloc(len[i]);
        if (!slot[i]) abort();
        if (len[i]) memset(slot[i], (unsigned char)len[i], len[i]);
    }
    for (size_t i = 0; i < SLOTS; i++) free(slot[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    uint64_t rng = 77;
    for (int i = 0; i < 1000; i++) {
        size_t n = size_of(&rng);
        char *p = malloc(n);
        if (!p) abort();
        memset(p, 1, n);
        free(p);
    }
    return NULL;
}

static int child(int round) {
    alarm(20);
    uint64_t rng = (uint64_t)round * 7919 + 3;
    enum { N = 1000 };
    static void *keep[N];
    for (int i = 0; i < N; i++) {
        size_t n = size_of(&rng);
        keep[i] = malloc(n);
        if (!keep[i]) return 1;
        memset(keep[i], 0xab, n);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL) || pthread_join(t, NULL)) return 2;
    char *s = NULL;
    for (int i = 0; i < 100; i++) {
        s = realloc(s, (size_t)(i + 1) * 1000);
        if (!s) return 3;
    }
    free(s);
    for (int i = 0; i < N; i++) free(keep[i]);
    return 0;
}

int main(void) {
    alarm(300);
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, churn, (void *)(i + 1))) return 1;
    int bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        void *p = malloc(100 + r); /* the forking thread allocates too */
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) {
            int rc = child(r);
            if (r % 2) exit(rc);   /* through atexit and .fini */
            _exit(rc);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid) { perror("waitpid"); return 1; }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "fork: child %d failed (status %#x)\n", r, st);
            bad++;
        }
        free(p);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    if (bad) return 1;
    printf("fork: %d children of a %d-thread parent ok\n", ROUNDS, THREADS + 1);
    return 0;
}

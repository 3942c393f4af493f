/* Thread churn: rounds of short-lived threads that allocate, hand half their
 * blocks to a partner thread to free (remote frees), and exit. The heaps of
 * exited threads must be reused (the HAKMEM_STATS line shows few heaps).
 * A pthread key of the program, created after the allocator's, has a
 * destructor that allocates and frees after the allocator's destructor has
 * released the thread's heap. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T 4
#define ROUNDS 250
#define N 4000

static void *blocks[T][N];
static pthread_barrier_t bar;
static pthread_key_t late_key;

static void late_destructor(void *arg) {
    char *p = malloc(300);
    memset(p, 1, 300);
    char *q = realloc(p, 5000);
    if (!q || q[299] != 1) abort();
    free(q);
    free(arg); /* allocated while the thread still had its heap */
}

static void *work(void *arg) {
    int id = (int)(intptr_t)arg;
    pthread_setspecific(late_key, malloc(64));
    uint64_t rng = (uint64_t)id * 1000003 + 17;
    for (int i = 0; i < N; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = (rng >> 33) % (i % 64 == 0 ? 200000 : 2000);
        blocks[id][i] = malloc(n + 1);
        if (!blocks[id][i]) abort();
        memset(blocks[id][i], id, n + 1);
    }
    pthread_barrier_wait(&bar);
    /* Free our odd blocks and the partner's even ones. */
    int partner = (id + 1) % T;
    for (int i = 0; i < N; i++) {
        int owner = i % 2 ? id : partner;
        unsigned char *p = blocks[owner][i];
        if (p[0] != owner) abort();
        free(p);
    }
    return NULL;
}

int main(void) {
    free(malloc(1)); /* the allocator creates its key before ours */
    if (pthread_key_create(&late_key, late_destructor)) return 1;
    pthread_barrier_init(&bar, NULL, T);
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t t[T];
        for (intptr_t i = 0; i < T; i++)
            if (pthread_create(&t[i], NULL, work, (void *)i)) return 1;
        for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    }
    printf("threads: %d threads ok\n", T * ROUNDS);
    return 0;
}

/* A malloc workload for the allocator comparison: each thread keeps a
 * window of live blocks (mostly small, some mid, a few large), replacing one
 * at random per step; every eighth block it frees is instead handed to the
 * next thread through a lock-protected mailbox, so cross-thread frees are
 * part of the mix. Every block is written in full, so peak RSS counts it.
 *
 *   mstress [threads] [steps per thread] [large: 0 or 1]
 *
 * Without `large`, blocks of the large tier (64 KiB to 1 MiB) are replaced
 * by small ones. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 4096
#define MAILBOX 1024

struct mailbox {
    pthread_mutex_t lock;
    void *items[MAILBOX];
    int n;
};

static int threads;
static long steps;
static int large = 1;
static struct mailbox *boxes;

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick(uint64_t *s) {
    uint64_t r = next(s);
    switch (r % 64) {
    case 0: return large ? 65536 + r % (1 << 20) : 8 + r % 256; /* large */
    case 1: case 2: case 3: return 1024 + r % 30000; /* mid */
    default: return 8 + r % 256;                   /* small */
    }
}

static void *run(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);
    void **win = calloc(WINDOW, sizeof *win);
    struct mailbox *mine = &boxes[id], *peer = &boxes[(id + 1) % threads];
    unsigned long check = 0;
    for (long i = 0; i < steps; i++) {
        size_t k = next(&s) % WINDOW;
        if (win[k]) {
            check += ((unsigned char *)win[k])[0];
            if (i % 8 == 0) {
                pthread_mutex_lock(&peer->lock);
                if (peer->n < MAILBOX) {
                    peer->items[peer->n++] = win[k];
                    win[k] = NULL;
                }
                pthread_mutex_unlock(&peer->lock);
            }
            free(win[k]);
        }
        size_t n = pick(&s);
        win[k] = malloc(n);
        memset(win[k], (int)i, n); /* programs write what they allocate */
        if (i % 64 == 0) {
            pthread_mutex_lock(&mine->lock);
            for (int j = 0; j < mine->n; j++) free(mine->items[j]);
            mine->n = 0;
            pthread_mutex_unlock(&mine->lock);
        }
    }
    for (int k = 0; k < WINDOW; k++) free(win[k]);
    free(win);
    return (void *)(uintptr_t)check;
}

int main(int argc, char **argv) {
    threads = argc > 1 ? atoi(argv[1]) : 2;
    steps = argc > 2 ? atol(argv[2]) : 2000000;
    large = argc > 3 ? atoi(argv[3]) : 1;
    boxes = calloc((size_t)threads, sizeof *boxes);
    pthread_t *t = malloc(sizeof *t * (size_t)threads);
    for (int i = 0; i < threads; i++) {
        pthread_mutex_init(&boxes[i].lock, NULL);
        pthread_create(&t[i], NULL, run, (void *)(intptr_t)i);
    }
    unsigned long total = 0;
    for (int i = 0; i < threads; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (uintptr_t)r;
    }
    for (int i = 0; i < threads; i++)
        for (int j = 0; j < boxes[i].n; j++) free(boxes[i].items[j]);
    printf("mstress: %d threads x %ld steps (large %d), check %lu\n", threads, steps, large, total);
    return 0;
}

/*
 * LD_PRELOAD companion of wrkshim.so for the ka-10k scenario: counts the TLS
 * handshakes wrk completed, so the bench knows when all its connections are
 * open (a connection is ESTABLISHED long before its handshake ends when
 * 10,000 start at once). Built by bench.py with:
 *   cc -shared -fPIC -O2 -o hscount.so hscount.c -ldl -lpthread
 *
 *   HSCOUNT_FILE=path   an existing file of at least 8 bytes; its first 8
 *                       bytes (a native-endian uint64) count SSL_connect
 *                       calls that returned 1 (handshake complete)
 *
 * Preloaded after wrkshim.so (LD_PRELOAD="wrkshim.so hscount.so"): each
 * forwards to the next definition of SSL_connect with dlsym(RTLD_NEXT).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct ssl_st SSL;

static volatile uint64_t *counter;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void map_counter(void) {
    const char *path = getenv("HSCOUNT_FILE");
    if (!path) return;
    int fd = open(path, O_RDWR);
    if (fd < 0) return;
    void *p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) counter = (volatile uint64_t *)p;
}

int SSL_connect(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
    pthread_once(&once, map_counter);
    int r = real(s);
    if (r == 1 && counter) __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
    return r;
}

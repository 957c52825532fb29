/* A stand-in for the hub's search thread: RATE times a second, BURN_US of CPU in
 * SCHED_IDLE (set by chrt), either arithmetic only (MEM=0) or random reads over a
 * buffer of MB megabytes (MEM=1), for SECS seconds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
    int rate = atoi(argv[1]); double burn = atof(argv[2]) / 1e6; int mem = atoi(argv[3]);
    size_t mb = (size_t)atol(argv[4]); double secs = atof(argv[5]);
    size_t n = mb * 1024 * 1024 / 8; uint64_t *buf = NULL;
    if (mem) { buf = malloc(n * 8); for (size_t i = 0; i < n; i++) buf[i] = i * 2654435761u; }
    uint64_t x = 88172645463325252ull, acc = 0; double end = now() + secs; long rounds = 0;
    while (now() < end) {
        double stop = now() + burn;
        while (now() < stop) {
            for (int k = 0; k < 64; k++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                acc += mem ? buf[x % n] : x * 31;
            }
        }
        rounds++;
        usleep((useconds_t)(1e6 / rate));
    }
    fprintf(stderr, "burn: %ld rounds, acc %llu\n", rounds, (unsigned long long)acc);
    return 0;
}

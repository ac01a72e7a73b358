/*
 * One pipeline hop alone: the one-way latency of a small message between two processes, over a nanomsg PUSH/PULL
 * pair on ipc:// (what every Switchyard stage hop uses) and, for comparison, over a plain Unix socket pair.
 * A ping-pong: one-way = round trip / 2, measured with a pause between messages (an idle pipeline) or without.
 *
 *   cc -O2 -o /tmp/nanomsg-hop scripts/nanomsg-hop.c -lnanomsg
 *   /tmp/nanomsg-hop [messages = 500] [pause between messages, µs = 10000]
 */
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { payload = 200, warmup = 10 };

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, long long *oneway, int n, int pause_us) {
    qsort(oneway, n, sizeof *oneway, compare);
    printf("%-24s one-way µs: p50 %6.1f  p90 %6.1f  p99 %6.1f  (%d messages, %d µs apart)\n", name,
           oneway[n / 2] / 1e3, oneway[n * 9 / 10] / 1e3, oneway[n * 99 / 100] / 1e3, n, pause_us);
}

/* Returns 0 when every message came back. */
static int nanomsg_hop(int n, int pause_us, long long *oneway) {
    char there[96], back[96];
    snprintf(there, sizeof there, "ipc:///tmp/nanomsg-hop-%d-there.ipc", (int)getpid());
    snprintf(back, sizeof back, "ipc:///tmp/nanomsg-hop-%d-back.ipc", (int)getpid());
    int timeout_ms = 2000;
    pid_t child = fork();
    if (child == 0) { /* the echoing stage */
        int in = nn_socket(AF_SP, NN_PULL), out = nn_socket(AF_SP, NN_PUSH);
        nn_setsockopt(in, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
        nn_bind(in, there);
        nn_connect(out, back);
        for (int i = 0; i < n + warmup; i++) {
            void *message;
            int size = nn_recv(in, &message, NN_MSG, 0);
            if (size < 0) break;
            nn_send(out, message, size, 0);
            nn_freemsg(message);
        }
        usleep(300000); /* let the last answer leave before the process does */
        _exit(0);
    }
    int in = nn_socket(AF_SP, NN_PULL), out = nn_socket(AF_SP, NN_PUSH);
    nn_setsockopt(in, NN_SOL_SOCKET, NN_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    nn_bind(in, back);
    nn_connect(out, there);
    usleep(300000); /* both connections formed */
    char buffer[payload];
    memset(buffer, 1, sizeof buffer);
    int failed = 0;
    for (int i = 0; i < n + warmup && !failed; i++) {
        long long start = now_ns();
        void *message;
        nn_send(out, buffer, sizeof buffer, 0);
        if (nn_recv(in, &message, NN_MSG, 0) < 0) { failed = 1; break; }
        nn_freemsg(message);
        if (i >= warmup) oneway[i - warmup] = (now_ns() - start) / 2;
        if (pause_us) usleep(pause_us);
    }
    waitpid(child, NULL, 0);
    unlink(there + 6);
    unlink(back + 6);
    return failed;
}

static int unix_hop(int n, int pause_us, long long *oneway) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair) != 0) return 1;
    char buffer[payload];
    memset(buffer, 1, sizeof buffer);
    pid_t child = fork();
    if (child == 0) {
        close(pair[0]);
        while (read(pair[1], buffer, sizeof buffer) > 0) write(pair[1], buffer, sizeof buffer);
        _exit(0);
    }
    close(pair[1]);
    int failed = 0;
    for (int i = 0; i < n + warmup; i++) {
        long long start = now_ns();
        if (write(pair[0], buffer, sizeof buffer) != payload || read(pair[0], buffer, sizeof buffer) != payload) {
            failed = 1;
            break;
        }
        if (i >= warmup) oneway[i - warmup] = (now_ns() - start) / 2;
        if (pause_us) usleep(pause_us);
    }
    close(pair[0]);
    waitpid(child, NULL, 0);
    return failed;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 500;
    int pause_us = argc > 2 ? atoi(argv[2]) : 10000;
    if (n < 1 || pause_us < 0) {
        fprintf(stderr, "usage: %s [messages >= 1] [pause between messages, µs]\n", argv[0]);
        return 2;
    }
    long long *oneway = calloc((size_t)n, sizeof *oneway);
    if (!oneway) return 1;
    int failed = 0;
    if (nanomsg_hop(n, pause_us, oneway) == 0) report("nanomsg PUSH/PULL ipc", oneway, n, pause_us);
    else { fprintf(stderr, "nanomsg: a message did not come back within 2 s\n"); failed = 1; }
    if (unix_hop(n, pause_us, oneway) == 0) report("Unix socket pair", oneway, n, pause_us);
    else { fprintf(stderr, "socket pair: a message did not come back\n"); failed = 1; }
    free(oneway);
    return failed;
}

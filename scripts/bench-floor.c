/*
 * bench-floor: the floor of a fan-out server, for scripts/bench-peers.sh (docs/BENCHMARKS.md, "Peers side by side").
 *
 *   bench-floor PORT COALESCE      PORT 0 picks a free one; prints "listening PORT" once it accepts
 *
 * One thread, epoll, loopback TCP. Every connection sends fixed 110-byte records (an unmasked WebSocket text frame
 * header 0x81 0x6c and a 108-byte payload; switchyard-bench --protocol raw):
 *   "sub=<subject>;..."   the connection subscribes to <subject> (0..1023) and gets one record "ok;..." back;
 *   "s=<subject>;..."     a publish: the record goes unchanged to every subscriber of <subject>.
 * COALESCE 1: one write() of the 110-byte record per delivery. COALESCE N: a subscriber's records wait until N
 * are there and leave in one write() (what is left goes out after 50 ms without input). No parsing beyond the
 * subject, no allocation per delivery: what any fan-out server must at least pay to the kernel.
 * A subscriber whose socket is full keeps its records in order in its own buffer until it drains (nothing lost).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECORD 110
#define SUBJECTS 1024
#define MAX_COALESCE 64

struct conn {
    int fd;
    unsigned char in[RECORD];
    int in_len;
    unsigned char out[RECORD * MAX_COALESCE]; /* records waiting to be coalesced */
    int out_count;
    unsigned char *backlog; /* bytes the socket did not take, in order */
    size_t backlog_len, backlog_cap;
};

struct subject {
    struct conn **subs;
    int count, cap;
};

static struct subject subjects[SUBJECTS];
static int epfd, coalesce;
static struct conn **coalescing; /* subscribers with records in out[] */
static int coalescing_count, coalescing_cap;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *grow(void *p, size_t size) {
    p = realloc(p, size);
    if (!p) die("realloc");
    return p;
}

static void drop(struct conn *c) {
    for (int s = 0; s < SUBJECTS; s++) {
        struct subject *sub = &subjects[s];
        for (int i = 0; i < sub->count; i++)
            if (sub->subs[i] == c) sub->subs[i--] = sub->subs[--sub->count];
    }
    for (int i = 0; i < coalescing_count; i++)
        if (coalescing[i] == c) coalescing[i--] = coalescing[--coalescing_count];
    close(c->fd);
    free(c->backlog);
    free(c);
}

static void keep(struct conn *c, const unsigned char *bytes, size_t len) {
    if (c->backlog_len + len > c->backlog_cap) {
        c->backlog_cap = (c->backlog_len + len) * 2;
        c->backlog = grow(c->backlog, c->backlog_cap);
    }
    memcpy(c->backlog + c->backlog_len, bytes, len);
    c->backlog_len += len;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* One write() of len bytes, or into the backlog behind what is already waiting. */
static void send_bytes(struct conn *c, const unsigned char *bytes, size_t len) {
    if (c->backlog_len > 0) {
        keep(c, bytes, len);
        return;
    }
    ssize_t n = write(c->fd, bytes, len);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return; /* the read side notices the close */
        n = 0;
    }
    if ((size_t)n < len) keep(c, bytes + n, len - (size_t)n);
}

static void drain_backlog(struct conn *c) {
    ssize_t n = write(c->fd, c->backlog, c->backlog_len);
    if (n <= 0) return;
    memmove(c->backlog, c->backlog + n, c->backlog_len - (size_t)n);
    c->backlog_len -= (size_t)n;
    if (c->backlog_len == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void flush_coalesced(void) {
    for (int i = 0; i < coalescing_count; i++) {
        struct conn *c = coalescing[i];
        send_bytes(c, c->out, (size_t)c->out_count * RECORD);
        c->out_count = 0;
    }
    coalescing_count = 0;
}

static void deliver(struct conn *c, const unsigned char *record) {
    if (coalesce == 1) {
        send_bytes(c, record, RECORD);
        return;
    }
    if (c->out_count == 0) {
        if (coalescing_count == coalescing_cap) {
            coalescing_cap = coalescing_cap ? coalescing_cap * 2 : 1024;
            coalescing = grow(coalescing, sizeof *coalescing * (size_t)coalescing_cap);
        }
        coalescing[coalescing_count++] = c;
    }
    memcpy(c->out + c->out_count * RECORD, record, RECORD);
    if (++c->out_count == coalesce) {
        send_bytes(c, c->out, (size_t)coalesce * RECORD);
        c->out_count = 0;
        for (int i = 0; i < coalescing_count; i++)
            if (coalescing[i] == c) { coalescing[i] = coalescing[--coalescing_count]; break; }
    }
}

/* The number after `prefix` at the start of the payload, or -1. */
static int subject_of(const unsigned char *payload, const char *prefix) {
    size_t n = strlen(prefix);
    if (memcmp(payload, prefix, n) != 0) return -1;
    int value = 0, digits = 0;
    for (size_t i = n; i < RECORD - 2 && payload[i] >= '0' && payload[i] <= '9' && digits < 5; i++, digits++)
        value = value * 10 + (payload[i] - '0');
    return digits > 0 && value < SUBJECTS ? value : -1;
}

static void handle_record(struct conn *c) {
    const unsigned char *payload = c->in + 2;
    int s = subject_of(payload, "s=");
    if (s >= 0) {
        struct subject *sub = &subjects[s];
        for (int i = 0; i < sub->count; i++) deliver(sub->subs[i], c->in);
        return;
    }
    s = subject_of(payload, "sub=");
    if (s < 0) return;
    struct subject *sub = &subjects[s];
    if (sub->count == sub->cap) {
        sub->cap = sub->cap ? sub->cap * 2 : 64;
        sub->subs = grow(sub->subs, sizeof *sub->subs * (size_t)sub->cap);
    }
    sub->subs[sub->count++] = c;
    unsigned char ok[RECORD];
    memset(ok, '.', RECORD);
    ok[0] = 0x81;
    ok[1] = RECORD - 2;
    memcpy(ok + 2, "ok;", 3);
    send_bytes(c, ok, RECORD);
}

static void readable(struct conn *c) {
    unsigned char buf[RECORD * 64];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            drop(c);
            return;
        }
        if (n < 0) return;
        for (ssize_t at = 0; at < n;) {
            size_t take = (size_t)(n - at) < (size_t)(RECORD - c->in_len) ? (size_t)(n - at) : (size_t)(RECORD - c->in_len);
            memcpy(c->in + c->in_len, buf + at, take);
            c->in_len += (int)take;
            at += (ssize_t)take;
            if (c->in_len == RECORD) {
                handle_record(c);
                c->in_len = 0;
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bench-floor PORT COALESCE\n");
        return 2;
    }
    coalesce = atoi(argv[2]);
    if (coalesce < 1 || coalesce > MAX_COALESCE) {
        fprintf(stderr, "bench-floor: COALESCE is 1..%d\n", MAX_COALESCE);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    socklen_t len = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, coalescing_count > 0 ? 50 : -1);
        if (n == 0) flush_coalesced();
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    if (!nc) die("calloc");
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) drain_backlog(c);
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c);
        }
    }
}

/*
 * loadgen.c - a Pomelo load generator (raw TCP or WebSocket), single-threaded, epoll.
 *
 * Why C: one Python process (even on uvloop) tops out well below 100k requests/s, which is
 * less than the bare-Twisted ceiling it has to drive; this loop spends ~1-2 us of CPU per
 * request, so one core drives several hundred thousand requests/s.
 *
 * Each connection: (ws: HTTP upgrade with a fixed key; client frames masked, one binary frame
 * per package) -> Pomelo handshake {"sys":{"type":"bench","version":"0.0.1"}} -> reads
 * "heartbeat":N and the dictionary code of the route from the answer (the route is compressed
 * when the server has a code for it, as real clients do) -> ACK -> a heartbeat every N seconds
 * -> D requests in flight (ids 1, 2, 3, ...); each response (matched by id) sends the next one.
 * A response whose body does not start with {"code":200 (a rate limit's 429, a 500) counts as an
 * error, not as throughput. Latency: CLOCK_MONOTONIC from the write of the request to the read of its response, in a
 * log-linear histogram (exact below 128 us, then 128 buckets per power of two: <0.8 % error).
 *
 * Timeline: connect (ramped: at most --ramp connections in setup at once; no requests yet, so
 * that set-up does not compete with load) -> all requests start -> --warmup seconds
 * -> --seconds of measurement -> one JSON line on stdout -> exit. --idle: no requests; hold
 * the connections for --seconds after setup (heartbeating) and report how many are alive.
 * --pid P[,P...]: also report the CPU use of those processes over the window (server_cpu) and,
 * in idle mode, their summed VmRSS before connecting and at the end of the hold.
 * --rate R: paced instead of closed-loop: each connection starts at most R requests a second
 * (still at most D in flight), phases spread over the connections; a well-behaved client.
 * --bind A: connect from source address A (e.g. 127.0.0.2, another loopback address).
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- options */

static const char *opt_host = "127.0.0.1";
static int opt_port = 3010;
static int opt_ws = 0;
static int opt_conns = 100;
static int opt_inflight = 1;
static double opt_seconds = 10.0;
static double opt_warmup = 2.0;
static const char *opt_route = "connector.entryHandler.entry";
static const char *opt_body = "{}";
static int opt_idle = 0;
static int opt_ramp = 200;
static double opt_setup_timeout = 120.0;
static int opt_no_dict = 0;
static const char *opt_pids = NULL;
static double opt_rate = 0;          /* requests a second per connection; 0: closed loop */
static const char *opt_bind = NULL; /* source address */

/* ---------------------------------------------------------------- time */

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- histogram */

#define SUB_BITS 7
#define SUB (1 << SUB_BITS)
#define MAX_US ((1u << 24) - 1) /* ~16.7 s, above the 10 s asked for */
#define NBUCKETS (SUB + (24 - SUB_BITS) * SUB)

static uint64_t hist[NBUCKETS];
static uint64_t hist_n, hist_sum_us, hist_max_us;

static inline int bucket_of(uint32_t v) {
    if (v < SUB) return (int)v;
    int b = 31 - __builtin_clz(v); /* v in [2^b, 2^(b+1)), b >= SUB_BITS */
    int shift = b - SUB_BITS;
    return SUB + shift * SUB + (int)((v >> shift) - SUB);
}

static uint64_t bucket_value(int idx) { /* midpoint of the bucket, in us */
    if (idx < SUB) return (uint64_t)idx;
    int shift = (idx - SUB) / SUB;
    uint64_t top = (uint64_t)((idx - SUB) % SUB + SUB);
    uint64_t lo = top << shift, width = 1ull << shift;
    return lo + (width - 1) / 2;
}

static inline void hist_add(uint64_t us) {
    if (us > MAX_US) us = MAX_US;
    hist[bucket_of((uint32_t)us)]++;
    hist_n++;
    hist_sum_us += us;
    if (us > hist_max_us) hist_max_us = us;
}

static uint64_t hist_quantile(double q) {
    if (hist_n == 0) return 0;
    uint64_t target = (uint64_t)(q * (double)hist_n);
    if ((double)target < q * (double)hist_n) target++;
    if (target < 1) target = 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += hist[i];
        if (seen >= target) return bucket_value(i);
    }
    return hist_max_us;
}

/* ---------------------------------------------------------------- buffers */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + extra) cap *= 2;
    b->p = realloc(b->p, cap);
    if (!b->p) { perror("realloc"); exit(2); }
    b->cap = cap;
}

static inline void buf_append(buf_t *b, const void *data, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static inline void buf_consume(buf_t *b, size_t n) {
    if (n >= b->len) { b->len = 0; return; }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static void buf_free(buf_t *b) { free(b->p); b->p = NULL; b->len = b->cap = 0; }

/* ---------------------------------------------------------------- connections */

enum { ST_FREE, ST_CONNECTING, ST_UPGRADING, ST_HANDSHAKING, ST_WORKING, ST_CLOSED };

typedef struct {
    uint32_t id;
    uint64_t t_sent;
} slot_t;

typedef struct {
    int fd;
    int state;
    int want_out; /* EPOLLOUT registered */
    buf_t in;     /* raw bytes from the socket */
    buf_t pk;     /* ws: payload bytes of data frames (a package stream) */
    buf_t out;    /* bytes waiting to be written */
    uint32_t next_id;
    int outstanding;
    slot_t *slots;
    uint64_t next_hb_ns;
    uint64_t next_req_ns; /* --rate: when the next request may start */
} conn_t;

static conn_t *conns;
static int epfd;
static struct sockaddr_in server_addr;

static int route_code = 0;          /* from the handshake answer; 0 = send the route string */
static uint64_t hb_interval_ns = 0; /* from the handshake answer */

/* counters */
static uint64_t n_errors, n_connect_errors, n_handshake_errors, n_closed_by_peer, n_kicks,
    n_unmatched, n_protocol_errors, n_bad_responses, n_hb_rx, n_hb_tx;
static int n_started, n_working, n_in_setup, n_done_setup; /* done_setup: working or failed */
static int measuring, finished;
static uint64_t win_responses;
static uint32_t mask_state = 0x9e3779b9u;

static const char WS_KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char WS_ACCEPT[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; /* RFC 6455 sec. 1.3 example */

static void die(const char *what) { perror(what); exit(2); }

static void ep_mod(conn_t *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = want_out;
}

static void conn_close(conn_t *c, int is_error) {
    if (c->state == ST_FREE || c->state == ST_CLOSED) return;
    int was_setup = c->state != ST_WORKING;
    if (c->state == ST_WORKING) n_working--;
    if (was_setup) { n_in_setup--; n_done_setup++; }
    if (is_error) n_errors++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = ST_CLOSED;
    buf_free(&c->in);
    buf_free(&c->pk);
    buf_free(&c->out);
    free(c->slots);
    c->slots = NULL;
}

/* Write what we can; keep the rest and ask for EPOLLOUT. */
static void conn_flush(conn_t *c) {
    while (c->out.len) {
        ssize_t n = write(c->fd, c->out.p, c->out.len);
        if (n > 0) { buf_consume(&c->out, (size_t)n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { ep_mod(c, 1); return; }
        n_closed_by_peer++;
        conn_close(c, 1);
        return;
    }
    ep_mod(c, 0);
}

/* Queue one Pomelo package (type, body) - for ws, inside one masked binary frame. */
static void send_package(conn_t *c, uint8_t type, const uint8_t *body, size_t blen) {
    uint8_t head[4] = {type, (uint8_t)(blen >> 16), (uint8_t)(blen >> 8), (uint8_t)blen};
    if (!opt_ws) {
        buf_reserve(&c->out, 4 + blen);
        memcpy(c->out.p + c->out.len, head, 4);
        if (blen) memcpy(c->out.p + c->out.len + 4, body, blen);
        c->out.len += 4 + blen;
        return;
    }
    size_t plen = 4 + blen;
    uint8_t fh[14];
    size_t fl = 0;
    fh[fl++] = 0x82; /* FIN | binary */
    if (plen < 126) {
        fh[fl++] = 0x80 | (uint8_t)plen;
    } else if (plen < 65536) {
        fh[fl++] = 0x80 | 126;
        fh[fl++] = (uint8_t)(plen >> 8);
        fh[fl++] = (uint8_t)plen;
    } else {
        fh[fl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) fh[fl++] = (uint8_t)((uint64_t)plen >> (8 * i));
    }
    /* xorshift32 mask key: servers do not care how unpredictable it is */
    mask_state ^= mask_state << 13;
    mask_state ^= mask_state >> 17;
    mask_state ^= mask_state << 5;
    uint8_t mk[4] = {(uint8_t)(mask_state >> 24), (uint8_t)(mask_state >> 16),
                     (uint8_t)(mask_state >> 8), (uint8_t)mask_state};
    memcpy(fh + fl, mk, 4);
    fl += 4;
    buf_reserve(&c->out, fl + plen);
    uint8_t *w = c->out.p + c->out.len;
    memcpy(w, fh, fl);
    w += fl;
    for (size_t i = 0; i < plen; i++) {
        uint8_t b = i < 4 ? head[i] : body[i - 4];
        w[i] = b ^ mk[i & 3];
    }
    c->out.len += fl + plen;
}

static size_t route_len, body_len;

static void send_request(conn_t *c, uint64_t t) {
    uint8_t msg[1 + 5 + 2 + 256 + 4096];
    size_t n = 0;
    uint32_t id = c->next_id++;
    msg[n++] = route_code ? 0x01 : 0x00; /* REQUEST, route compressed or not */
    uint32_t v = id;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        msg[n++] = v ? (b | 0x80) : b;
    } while (v);
    if (route_code) {
        msg[n++] = (uint8_t)(route_code >> 8);
        msg[n++] = (uint8_t)route_code;
    } else {
        msg[n++] = (uint8_t)route_len;
        memcpy(msg + n, opt_route, route_len);
        n += route_len;
    }
    memcpy(msg + n, opt_body, body_len);
    n += body_len;
    send_package(c, 4, msg, n);
    for (int i = 0; i < opt_inflight; i++) {
        if (c->slots[i].id == 0) {
            c->slots[i].id = id;
            c->slots[i].t_sent = t;
            break;
        }
    }
    c->outstanding++;
}

static int load_on; /* requests flow only once every connection is set up */

static void fill_requests(conn_t *c, uint64_t t) {
    if (opt_idle || finished || !load_on) return;
    if (opt_rate > 0) {
        uint64_t interval = (uint64_t)(1e9 / opt_rate);
        while (c->outstanding < opt_inflight && t >= c->next_req_ns) {
            send_request(c, t);
            c->next_req_ns += interval;
            if (c->next_req_ns < t) c->next_req_ns = t + interval; /* fell behind: no catch-up */
        }
        return;
    }
    while (c->outstanding < opt_inflight) send_request(c, t);
}

/* Minimal JSON reading of the handshake answer. */
static long json_int_after(const char *s, const char *key) {
    const char *p = s;
    size_t kl = strlen(key);
    while ((p = strstr(p, key)) != NULL) {
        const char *q = p + kl;
        while (*q == ' ') q++;
        if (*q >= '0' && *q <= '9') return strtol(q, NULL, 10);
        p += kl;
    }
    return -1;
}

static void on_handshake(conn_t *c, const uint8_t *body, size_t len, uint64_t t) {
    char *s = malloc(len + 1);
    memcpy(s, body, len);
    s[len] = 0;
    long code = json_int_after(s, "\"code\":");
    if (code != 200) {
        free(s);
        n_handshake_errors++;
        conn_close(c, 1);
        return;
    }
    long hb = json_int_after(s, "\"heartbeat\":");
    hb_interval_ns = hb > 0 ? (uint64_t)hb * 1000000000ull : 0;
    if (!opt_no_dict) {
        char key[300];
        snprintf(key, sizeof key, "\"%s\":", opt_route);
        long rc = json_int_after(s, key);
        route_code = (rc > 0 && rc < 65536) ? (int)rc : 0;
    }
    free(s);
    send_package(c, 2, NULL, 0); /* ACK */
    c->state = ST_WORKING;
    n_working++;
    n_in_setup--;
    n_done_setup++;
    if (hb_interval_ns) c->next_hb_ns = t + hb_interval_ns;
    fill_requests(c, t);
}

static void on_response(conn_t *c, const uint8_t *m, size_t len, uint64_t t) {
    if (len < 2) { n_protocol_errors++; return; }
    uint8_t flag = m[0];
    int type = (flag >> 1) & 7;
    if (type != 2) return; /* a push: ignore */
    uint32_t id = 0;
    size_t i = 1;
    int shift = 0;
    for (;;) {
        if (i >= len || shift > 28) { n_protocol_errors++; return; }
        uint8_t b = m[i++];
        id |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
    }
    /* A response that is not {"code":200...} (a server's 429 rate limit, a 500) is an error:
     * it must not count as throughput. */
    static const char ok[] = "{\"code\":200";
    if (len - i < sizeof ok - 1 || memcmp(m + i, ok, sizeof ok - 1) != 0) {
        n_bad_responses++;
        n_errors++;
    }
    for (int k = 0; k < opt_inflight; k++) {
        if (c->slots[k].id == id) {
            c->slots[k].id = 0;
            c->outstanding--;
            if (measuring) {
                hist_add((t - c->slots[k].t_sent) / 1000);
                win_responses++;
            }
            fill_requests(c, t);
            return;
        }
    }
    n_unmatched++;
}

/* Parse whole packages from a stream buffer. Returns -1 if the connection was closed. */
static int parse_packages(conn_t *c, buf_t *b, uint64_t t) {
    size_t off = 0;
    while (b->len - off >= 4) {
        const uint8_t *p = b->p + off;
        uint8_t type = p[0];
        size_t len = ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        if (type < 1 || type > 5) { n_protocol_errors++; conn_close(c, 1); return -1; }
        if (b->len - off < 4 + len) break;
        const uint8_t *body = p + 4;
        switch (type) {
        case 1:
            if (c->state == ST_HANDSHAKING) on_handshake(c, body, len, t);
            break;
        case 3:
            n_hb_rx++;
            break;
        case 4:
            if (c->state == ST_WORKING) on_response(c, body, len, t);
            break;
        case 5:
            n_kicks++;
            conn_close(c, 1);
            return -1;
        default:
            break;
        }
        if (c->state == ST_CLOSED) return -1;
        off += 4 + len;
    }
    buf_consume(b, off);
    return 0;
}

static void send_pong(conn_t *c, const uint8_t *payload, size_t n) {
    if (n > 125) n = 125;
    uint8_t fh[6 + 125];
    fh[0] = 0x8a;
    fh[1] = 0x80 | (uint8_t)n;
    memset(fh + 2, 0, 4); /* zero mask key */
    memcpy(fh + 6, payload, n);
    buf_append(&c->out, fh, 6 + n);
}

/* ws: decode complete server frames from c->in into c->pk. Returns -1 if closed. */
static int parse_frames(conn_t *c) {
    size_t off = 0;
    buf_t *b = &c->in;
    while (b->len - off >= 2) {
        const uint8_t *p = b->p + off;
        int opcode = p[0] & 0x0f;
        int masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (b->len - off < 4) break;
            plen = ((uint64_t)p[2] << 8) | p[3];
            hl = 4;
        } else if (plen == 127) {
            if (b->len - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | p[2 + i];
            hl = 10;
        }
        if (masked) hl += 4;
        if (b->len - off < hl + plen) break;
        const uint8_t *pay = p + hl;
        if (masked) { n_protocol_errors++; conn_close(c, 1); return -1; } /* servers never mask */
        switch (opcode) {
        case 0: case 1: case 2: /* continuation, text, binary: package bytes */
            buf_append(&c->pk, pay, (size_t)plen);
            break;
        case 8: /* close */
            n_closed_by_peer++;
            conn_close(c, 1);
            return -1;
        case 9: /* ping */
            send_pong(c, pay, (size_t)plen);
            break;
        default:
            break;
        }
        off += hl + (size_t)plen;
    }
    buf_consume(b, off);
    return 0;
}

static char handshake_body[] = "{\"sys\":{\"type\":\"bench\",\"version\":\"0.0.1\"}}";
static char upgrade_req[512];
static size_t upgrade_len;

static void start_pomelo_handshake(conn_t *c) {
    c->state = ST_HANDSHAKING;
    send_package(c, 1, (const uint8_t *)handshake_body, strlen(handshake_body));
}

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        n_connect_errors++;
        conn_close(c, 1);
        return;
    }
    if (opt_ws) {
        c->state = ST_UPGRADING;
        buf_append(&c->out, upgrade_req, upgrade_len);
    } else {
        start_pomelo_handshake(c);
    }
    conn_flush(c);
}

static uint8_t rbuf[256 * 1024];

static void on_readable(conn_t *c, uint64_t t) {
    ssize_t n = read(c->fd, rbuf, sizeof rbuf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        if (!finished) n_closed_by_peer++;
        conn_close(c, 1);
        return;
    }
    if (n < 0) return;
    buf_append(&c->in, rbuf, (size_t)n);
    if (c->state == ST_UPGRADING) {
        buf_reserve(&c->in, 1);
        c->in.p[c->in.len] = 0;
        char *end = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
        if (!end) return;
        size_t hlen = (size_t)(end - (char *)c->in.p) + 4;
        if (memcmp(c->in.p, "HTTP/1.1 101", 12) != 0 || !memmem(c->in.p, hlen, WS_ACCEPT, 28)) {
            n_handshake_errors++;
            conn_close(c, 1);
            return;
        }
        buf_consume(&c->in, hlen);
        start_pomelo_handshake(c);
    }
    if (opt_ws) {
        if (parse_frames(c) < 0) return;
        if (parse_packages(c, &c->pk, t) < 0) return;
    } else {
        if (parse_packages(c, &c->in, t) < 0) return;
    }
    if (c->out.len) conn_flush(c);
}

static int start_connect(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->next_id = 1;
    c->slots = calloc((size_t)opt_inflight, sizeof(slot_t));
    n_started++;
    n_in_setup++;
    if (opt_bind) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, opt_bind, &src.sin_addr) != 1) { fprintf(stderr, "bad --bind\n"); exit(2); }
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    }
    int r = connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr);
    if (r < 0 && errno != EINPROGRESS) {
        c->state = ST_CONNECTING;
        struct epoll_event ev0 = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev0);
        n_connect_errors++;
        conn_close(c, 1);
        return -1;
    }
    c->state = ST_CONNECTING;
    c->want_out = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    return 0;
}

/* ---------------------------------------------------------------- server-side /proc readings */

#define MAX_PIDS 8
static int pids[MAX_PIDS], npids;

static double proc_cpu_seconds(void) { /* utime + stime of all --pid processes */
    double total = 0;
    long tck = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < npids; i++) {
        char path[64], line[2048];
        snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[n] = 0;
        char *p = strrchr(line, ')');
        if (!p) continue;
        unsigned long ut = 0, st = 0;
        /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)tck;
    }
    return total;
}

static long proc_status_kb(const char *field) { /* summed over --pid processes */
    long total = 0;
    size_t fl = strlen(field);
    for (int i = 0; i < npids; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
                total += strtol(line + fl + 1, NULL, 10);
                break;
            }
        }
        fclose(f);
    }
    return total;
}

/* Per-CPU busy and steal jiffies from /proc/stat, to tell whether anything else ran on the
 * server's or the load generator's CPU during the window (a noisy machine). */
#define MAX_CPUS 64
static int ncpus;
static unsigned long long cpu_busy0[MAX_CPUS], cpu_irq0[MAX_CPUS], cpu_steal0[MAX_CPUS],
    cpu_total0[MAX_CPUS];
static unsigned long long cpu_busy1[MAX_CPUS], cpu_irq1[MAX_CPUS], cpu_steal1[MAX_CPUS],
    cpu_total1[MAX_CPUS];

static void read_cpu_stat(unsigned long long *busy, unsigned long long *irq,
                          unsigned long long *steal, unsigned long long *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < MAX_CPUS) {
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
        unsigned long long v[8] = {0};
        sscanf(line + 3, "%*d %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7]);
        busy[n] = v[0] + v[1] + v[2]; /* user nice system */
        irq[n] = v[5] + v[6];         /* irq softirq: mostly the loopback network stack */
        steal[n] = v[7];
        total[n] = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        n++;
    }
    fclose(f);
    ncpus = n;
}

static double self_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------- main */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --host H --port P --transport tcp|ws --conns N --inflight D\n"
            "               --seconds S --warmup W --route R --body JSON [--idle]\n"
            "               [--ramp K] [--setup-timeout T] [--no-dict] [--pid P[,P...]]\n"
            "               [--rate R] [--bind ADDR]\n");
    exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--host")) opt_host = v;
        else if (ARG("--port")) opt_port = atoi(v);
        else if (ARG("--transport")) {
            if (strcmp(v, "ws") == 0) opt_ws = 1;
            else if (strcmp(v, "tcp") == 0) opt_ws = 0;
            else usage();
        }
        else if (ARG("--conns")) opt_conns = atoi(v);
        else if (ARG("--inflight")) opt_inflight = atoi(v);
        else if (ARG("--seconds")) opt_seconds = atof(v);
        else if (ARG("--warmup")) opt_warmup = atof(v);
        else if (ARG("--route")) opt_route = v;
        else if (ARG("--body")) opt_body = v;
        else if (ARG("--ramp")) opt_ramp = atoi(v);
        else if (ARG("--setup-timeout")) opt_setup_timeout = atof(v);
        else if (ARG("--pid")) opt_pids = v;
        else if (ARG("--rate")) opt_rate = atof(v);
        else if (ARG("--bind")) opt_bind = v;
        else if (strcmp(a, "--idle") == 0) opt_idle = 1;
        else if (strcmp(a, "--no-dict") == 0) opt_no_dict = 1;
        else usage();
#undef ARG
    }
    route_len = strlen(opt_route);
    body_len = strlen(opt_body);
    if (opt_conns < 1 || opt_inflight < 1 || opt_ramp < 1 || route_len > 255 || body_len > 4096)
        usage();
    if (opt_pids) {
        char *s = strdup(opt_pids), *save = NULL;
        for (char *tok = strtok_r(s, ",", &save); tok && npids < MAX_PIDS;
             tok = strtok_r(NULL, ",", &save))
            pids[npids++] = atoi(tok);
        free(s);
    }
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)opt_conns + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (rl.rlim_max < want) rl.rlim_max = want; /* works as root */
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            if ((rlim_t)opt_conns + 64 > rl.rlim_max)
                fprintf(stderr, "loadgen: RLIMIT_NOFILE %lu is too low for %d connections\n",
                        (unsigned long)rl.rlim_max, opt_conns);
        }
    }

    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &server_addr.sin_addr) != 1) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(opt_host, NULL, &hints, &res) != 0) { fprintf(stderr, "bad host\n"); return 2; }
        server_addr.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    upgrade_len = (size_t)snprintf(upgrade_req, sizeof upgrade_req,
                                   "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                                   "Sec-WebSocket-Version: 13\r\n\r\n",
                                   opt_host, opt_port, WS_KEY);

    conns = calloc((size_t)opt_conns, sizeof(conn_t));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    long rss_before = npids ? proc_status_kb("VmRSS") : 0;
    uint64_t t0 = now_ns();
    uint64_t setup_deadline = t0 + (uint64_t)(opt_setup_timeout * 1e9);
    uint64_t t_setup_done = 0, t_win_start = 0, t_win_end = 0, next_sweep = t0;
    double self_cpu0 = 0, srv_cpu0 = 0, self_cpu1 = 0, srv_cpu1 = 0;
    int alive_at_end = 0;
    long rss_after = 0, hwm_after = 0;
    int next_conn = 0;
    struct epoll_event evs[1024];

    for (;;) {
        /* ramp: keep at most opt_ramp connections in setup */
        while (!t_setup_done && next_conn < opt_conns && n_in_setup < opt_ramp)
            start_connect(&conns[next_conn++]);

        int n = epoll_wait(epfd, evs, 1024, opt_rate > 0 ? 1 : 20);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == ST_CLOSED || c->state == ST_FREE) continue;
            uint32_t e = evs[i].events;
            if (c->state == ST_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c, t);
            if (c->state != ST_CLOSED && (e & EPOLLOUT)) conn_flush(c);
        }
        t = now_ns();

        /* heartbeats (and the clock-driven phases) every 10 ms */
        if (t >= next_sweep) {
            next_sweep = t + (opt_rate > 0 ? 1000000ull : 10000000ull);
            if (opt_rate > 0 && load_on)
                for (int i = 0; i < next_conn; i++)
                    if (conns[i].state == ST_WORKING && conns[i].outstanding < opt_inflight &&
                        t >= conns[i].next_req_ns) {
                        fill_requests(&conns[i], t);
                        conn_flush(&conns[i]);
                    }
            if (hb_interval_ns) {
                for (int i = 0; i < next_conn; i++) {
                    conn_t *c = &conns[i];
                    if (c->state == ST_WORKING && t >= c->next_hb_ns) {
                        c->next_hb_ns += hb_interval_ns;
                        if (c->next_hb_ns < t) c->next_hb_ns = t + hb_interval_ns;
                        send_package(c, 3, NULL, 0);
                        n_hb_tx++;
                        conn_flush(c);
                    }
                }
            }
        }

        if (!t_setup_done) {
            int all_tried = next_conn >= opt_conns;
            if ((all_tried && n_in_setup == 0) || t >= setup_deadline) {
                t_setup_done = t;
                for (int i = 0; i < next_conn; i++) /* give up on stragglers */
                    if (conns[i].state != ST_WORKING && conns[i].state != ST_CLOSED) {
                        n_handshake_errors++;
                        conn_close(&conns[i], 1);
                    }
                load_on = 1;
                if (opt_rate > 0) /* spread the phases over one interval */
                    for (int i = 0; i < next_conn; i++)
                        conns[i].next_req_ns = t + (uint64_t)(1e9 / opt_rate * i / next_conn);
                for (int i = 0; i < next_conn; i++)
                    if (conns[i].state == ST_WORKING) {
                        fill_requests(&conns[i], t);
                        conn_flush(&conns[i]);
                    }
                fprintf(stderr, "loadgen: setup done in %.2f s: %d working, %llu errors\n",
                        (double)(t - t0) / 1e9, n_working, (unsigned long long)n_errors);
                fflush(stderr);
                t_win_start = t + (uint64_t)((opt_idle ? 0 : opt_warmup) * 1e9);
                t_win_end = t_win_start + (uint64_t)(opt_seconds * 1e9);
            }
        } else if (!measuring && !finished && t >= t_win_start) {
            measuring = 1;
            t_win_start = t;
            t_win_end = t + (uint64_t)(opt_seconds * 1e9);
            self_cpu0 = self_cpu_seconds();
            srv_cpu0 = proc_cpu_seconds();
            read_cpu_stat(cpu_busy0, cpu_irq0, cpu_steal0, cpu_total0);
            if (opt_idle) { fprintf(stderr, "loadgen: ready\n"); fflush(stderr); }
        } else if (measuring && t >= t_win_end) {
            t_win_end = t;
            measuring = 0;
            finished = 1;
            self_cpu1 = self_cpu_seconds();
            srv_cpu1 = proc_cpu_seconds();
            read_cpu_stat(cpu_busy1, cpu_irq1, cpu_steal1, cpu_total1);
            alive_at_end = n_working;
            if (npids) {
                rss_after = proc_status_kb("VmRSS");
                hwm_after = proc_status_kb("VmHWM");
            }
            break;
        }
    }

    double win = (double)(t_win_end - t_win_start) / 1e9;
    double setup_s = (double)(t_setup_done - t0) / 1e9;
    printf("{\"transport\":\"%s\",\"conns\":%d,\"inflight\":%d,\"idle\":%s,\"seconds\":%.3f,"
           "\"requests\":%llu,\"rps\":%.1f,\"p50_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,"
           "\"max_us\":%llu,\"mean_us\":%.1f,\"alive\":%d,\"errors\":%llu,"
           "\"connect_errors\":%llu,\"handshake_errors\":%llu,\"closed_by_peer\":%llu,"
           "\"kicks\":%llu,\"unmatched\":%llu,\"protocol_errors\":%llu,\"bad_responses\":%llu,"
           "\"hb_tx\":%llu,\"hb_rx\":%llu,\"route_code\":%d,\"heartbeat_s\":%.0f,"
           "\"setup_s\":%.3f,\"loadgen_cpu\":%.3f",
           opt_ws ? "ws" : "tcp", opt_conns, opt_inflight, opt_idle ? "true" : "false", win,
           (unsigned long long)win_responses, win > 0 ? (double)win_responses / win : 0.0,
           (unsigned long long)hist_quantile(0.50), (unsigned long long)hist_quantile(0.99),
           (unsigned long long)hist_quantile(0.999), (unsigned long long)hist_max_us,
           hist_n ? (double)hist_sum_us / (double)hist_n : 0.0, alive_at_end,
           (unsigned long long)n_errors, (unsigned long long)n_connect_errors,
           (unsigned long long)n_handshake_errors, (unsigned long long)n_closed_by_peer,
           (unsigned long long)n_kicks, (unsigned long long)n_unmatched,
           (unsigned long long)n_protocol_errors, (unsigned long long)n_bad_responses,
           (unsigned long long)n_hb_tx,
           (unsigned long long)n_hb_rx, route_code, (double)hb_interval_ns / 1e9, setup_s,
           win > 0 ? (self_cpu1 - self_cpu0) / win : 0.0);
    if (npids)
        printf(",\"server_cpu\":%.3f,\"server_rss_before_kb\":%ld,\"server_rss_after_kb\":%ld,"
               "\"server_hwm_kb\":%ld",
               win > 0 ? (srv_cpu1 - srv_cpu0) / win : 0.0, rss_before, rss_after, hwm_after);
    /* per CPU over the window: user+system time of all processes, irq+softirq, hypervisor steal */
    printf(",\"cpu_busy\":[");
    for (int i = 0; i < ncpus; i++) {
        double tot = (double)(cpu_total1[i] - cpu_total0[i]);
        printf("%s%.3f", i ? "," : "", tot > 0 ? (double)(cpu_busy1[i] - cpu_busy0[i]) / tot : 0.0);
    }
    printf("],\"cpu_irq\":[");
    for (int i = 0; i < ncpus; i++) {
        double tot = (double)(cpu_total1[i] - cpu_total0[i]);
        printf("%s%.3f", i ? "," : "", tot > 0 ? (double)(cpu_irq1[i] - cpu_irq0[i]) / tot : 0.0);
    }
    printf("],\"cpu_steal\":[");
    for (int i = 0; i < ncpus; i++) {
        double tot = (double)(cpu_total1[i] - cpu_total0[i]);
        printf("%s%.3f", i ? "," : "", tot > 0 ? (double)(cpu_steal1[i] - cpu_steal0[i]) / tot : 0.0);
    }
    printf("]}\n");
    fflush(stdout);
    return 0;
}

/*
 * The remote tier's read half ("Remote tier" in cramnative.h): a fault on a REMOTE slot claims its
 * page (EVICTED -> FETCHING) under the engine lock; the extent is fetched outside it with one RESP
 * GETRANGE, opened (AES-256-GCM, libcrypto), checked (CRC-32C), decoded (LZ4), mapped with one
 * UFFDIO_COPY and published. Two ways, by fault service:
 *   - service thread: the service sends the request itself, without waiting, on the node's one
 *     connection, and goes on serving faults; the node's reader thread (cram-remote), blocked in
 *     recv on that connection, is woken by the reply itself and finishes the fetch. Requests are
 *     pipelined: replies come in the order they were sent, matched to a FIFO of requests. So a
 *     remote swap-in costs the fault's own two wake-ups (faulting thread -> service -> faulting
 *     thread) and the round trip, no more: no hand-off to a fetcher thread on the way out.
 *   - faulting thread: the thread fetches for itself on a lane (pooled blocking connections), in
 *     its SIGBUS handler, once it let the engine lock go: no wake-up at all. Nothing here waits for managed code or takes the engine lock, and
 * everything the faulting thread runs is a system call or plain code on memory allocated at
 * configure time (it runs in a signal handler): no malloc, no stdio, no locale.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#define REMOTE_QUEUE 4096     /* requests in flight on one node's connection (one per faulting thread at most, in practice) */
#define REMOTE_LANES_MAX 16   /* faulting-thread fetches that run at once: each lane has its connections, cipher and buffers */
#define REMOTE_WINDOW_MAX 16  /* pages one request brings in: a faulting page and the readahead after it */
#define REMOTE_REPLY_MAX (REMOTE_WINDOW_MAX * (CRAM_PAGE_SIZE + CRAM_REMOTE_TAG_BYTES) + 64)
#define REMOTE_READER_BUFFER (256u << 10) /* a node reader's receive buffer: pipelined replies */
#define REMOTE_READER_NICE 10 /* a node reader's nice value (cram-remote; measured: +5 did not keep local faults unharmed on 2 CPUs) */
#define REMOTE_IO_SLICE_MS 250 /* a socket operation's own timeout; the fetch's retries run to config.timeout_ms */

/* One page of a request: its extent lies `offset` bytes into the request's span of the segment,
 * after the one before it (so one GETRANGE reads them all; a resident page's extent in between is
 * read and passed over). */
typedef struct remote_page {
    uint64_t page;     /* in the request's region */
    uint64_t old;      /* the page's EVICTED word (restored if the fetch fails) */
    uint64_t next;     /* the word it gets once mapped: CLEAN(slot) or DIRTY, with working-set bits */
    uint64_t slot_id;
    uint32_t offset;   /* of its extent in the span (entry 0: 0) */
    uint32_t checksum;
    uint16_t length;
    uint8_t flags;
    uint8_t reserved[5];
} remote_page;

/* A fetch: the faulting page (entry 0) and, for a read that continues a sequential stream, the
 * evicted pages after it whose extents follow its own on the store (readahead: one request). */
typedef struct remote_request {
    cram_region_desc* region;
    uint64_t location; /* entry 0's extent: where the span starts */
    uint64_t t0;
    uint64_t deadline; /* t0 + the fetch timeout: retried until then, then failed */
    uint32_t span;     /* bytes from entry 0's extent to the end of the last one's */
    uint32_t count;    /* entries, 1..REMOTE_WINDOW_MAX */
    uint32_t write;    /* entry 0 is a write (then count is 1) */
    uint32_t prefetch; /* Advise(WillNeed): no fault; every entry counts as prefetched */
    remote_page pages[REMOTE_WINDOW_MAX];
} remote_request;

/* A connection: a TCP socket, and its TLS session when config.tls (an SSL*, used by one thread at a time). */
typedef struct remote_link {
    int fd;    /* -1: not connected */
    void* ssl; /* NULL: plain TCP */
} remote_link;

/* A node's connection for the service thread's fetches: the service sends (under lock), the node's
 * reader receives; with TLS the reader does both (the service queues and wakes it). fifo[head ..
 * head + count) are the requests in flight, in the order they were sent; the first `sent` of them
 * are on the wire. */
typedef struct remote_node {
    pthread_mutex_t lock; /* a leaf: taken under the engine lock by the service, alone by the reader */
    pthread_cond_t work;  /* the reader waits on it while it has no connection and nothing to send */
    remote_link link;     /* fd -1: not connected (only the reader connects and closes; others shut it down) */
    int wake;             /* TLS: an eventfd the fault path writes when it queued a request for the reader to send */
    uint64_t peer;        /* the endpoint word fd is connected to */
    uint32_t head, count, sent;
    uint32_t broken;      /* a send failed: the reader closes the connection and starts over */
    remote_request fifo[REMOTE_QUEUE];
    remote_request expired[REMOTE_QUEUE]; /* the reader's: requests past their deadline, failed without the lock */
    cram_engine* engine;
    uint32_t index;       /* the node */
    pthread_t reader;
    uint32_t started;
    unsigned char* buf;   /* reader only: REMOTE_READER_BUFFER, then plain and page */
    void* cipher;         /* reader only */
} remote_node;

/* libcrypto's EVP AES-GCM, loaded with dlopen (libssl3 is on every machine .NET runs on, whose own
 * AesGcm uses it: no -dev package needed to build). */
typedef struct crypto_api {
    void* (*ctx_new)(void);
    void (*ctx_free)(void*);
    const void* (*aes_256_gcm)(void);
    int (*decrypt_init)(void*, const void*, void*, const unsigned char*, const unsigned char*);
    int (*decrypt_update)(void*, unsigned char*, int*, const unsigned char*, int);
    int (*decrypt_final)(void*, unsigned char*, int*);
    int (*ctx_ctrl)(void*, int, int, void*);
} crypto_api;
#define EVP_CTRL_GCM_SET_TAG 0x11

/* libssl's client side (TLS), loaded with dlopen as libcrypto is. */
typedef struct ssl_api {
    const void* (*client_method)(void);
    void* (*ctx_new)(const void*);
    void (*ctx_free)(void*);
    long (*ctx_ctrl)(void*, int, long, void*);
    void (*ctx_set_verify)(void*, int, void*);
    int (*ctx_load_verify_locations)(void*, const char*, const char*);
    int (*ctx_set_default_verify_paths)(void*);
    int (*ctx_use_certificate_chain_file)(void*, const char*);
    int (*ctx_use_private_key_file)(void*, const char*, int);
    int (*ctx_check_private_key)(const void*);
    void* (*ssl_new)(void*);
    void (*ssl_free)(void*);
    int (*set_fd)(void*, int);
    int (*set1_host)(void*, const char*);
    long (*ssl_ctrl)(void*, int, long, void*);
    void* (*get0_param)(void*);
    int (*param_set1_ip)(void*, const unsigned char*, size_t);
    int (*connect)(void*);
    int (*read)(void*, void*, int);
    int (*write)(void*, const void*, int);
    int (*pending)(const void*);
    int (*get_error)(const void*, int);
    long (*get_verify_result)(const void*);
    unsigned long (*peek_error)(void);
    void (*clear_error)(void);
} ssl_api;
#define SSL_VERIFY_PEER 0x01
#define SSL_FILETYPE_PEM 1
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55
#define SSL_CTRL_SET_MIN_PROTO_VERSION 123
#define TLS1_2_VERSION 0x0303
#define SSL_ERROR_SSL 1
#define SSL_ERROR_WANT_READ 2
#define SSL_ERROR_WANT_WRITE 3
#define SSL_ERROR_ZERO_RETURN 6

typedef struct remote_lane {
    uint32_t busy;
    remote_request request;                  /* the fetch it runs */
    remote_link link[CRAM_REMOTE_MAX_ENDPOINTS]; /* fd -1: not connected (never TLS: lanes run in signal handlers) */
    uint64_t peer[CRAM_REMOTE_MAX_ENDPOINTS]; /* the endpoint word link is connected to */
    void* cipher;                            /* keyed once at configure; only the IV changes per entry */
    unsigned char* reply;                    /* REMOTE_REPLY_MAX */
    unsigned char* plain;                    /* CRAM_PAGE_SIZE: the opened (stored) bytes */
    unsigned char* page;                     /* CRAM_PAGE_SIZE: the decoded page */
} remote_lane;

typedef struct cram_remote {
    cram_remote_config config;
    uint32_t prefix_len, password_len;
    uint64_t endpoints[CRAM_REMOTE_MAX_ENDPOINTS]; /* address << 16 | port, 0: unknown (atomic) */
    remote_lane lanes[REMOTE_LANES_MAX];
    uint32_t lane_count;
    crypto_api crypto;
    void* libcrypto;
    ssl_api ssl;
    void* libssl;
    void* ssl_ctx;        /* TLS: the client context (trust, client certificate), shared by the readers' sessions */
    cram_engine* engine;
    uint32_t stop;
    remote_node* nodes[CRAM_REMOTE_MAX_ENDPOINTS]; /* service-thread engines: made with the node's first endpoint */
    uint32_t inflight[CRAM_MAX_REGIONS]; /* claimed fetches per region, not yet published */
    cram_remote_stats stats;
} cram_remote;

/* The lane holding the fetch the faulting thread claimed in its SIGBUS handler, run once it lets
 * the lock go (a pointer: a library loaded with dlopen has little static TLS to spare). */
static __thread struct remote_lane* t_pending __attribute__((tls_model("initial-exec")));

static void futex_wake_word(uint64_t* pte)
{
    syscall(SYS_futex, (uint32_t*)(void*)pte, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull) };
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ RESP over TCP */

static char* put_bytes(char* p, const void* s, size_t n) { memcpy(p, s, n); return p + n; }
static char* put_u64(char* p, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}
/* One RESP bulk string: $<n>\r\n<bytes>\r\n */
static char* put_bulk(char* p, const void* s, size_t n)
{
    *p++ = '$';
    p = put_u64(p, n);
    p = put_bytes(p, "\r\n", 2);
    p = put_bytes(p, s, n);
    return put_bytes(p, "\r\n", 2);
}
static char* put_bulk_u64(char* p, uint64_t v)
{
    char digits[24];
    return put_bulk(p, digits, (size_t)(put_u64(digits, v) - digits));
}

/* Whether the TLS error just reported on ssl means the session was refused: the server's certificate
 * did not verify, or the server sent an alert (a reason at SSL_AD_REASON_OFFSET and above) - not a
 * connection lost (a reset, an unexpected end of the stream: the store died), which is retried as any. */
static int tls_refused(const cram_remote* rm, const void* ssl)
{
    unsigned long e = rm->ssl.peek_error();
    uint32_t reason = (e & 0x80000000ul) ? 0 : (uint32_t)(e & 0x7FFFFFu); /* ERR_GET_REASON; the top bit: a system error */
    return rm->ssl.get_verify_result(ssl) != 0 /* X509_V_OK */ || reason >= 1000;
}

/* Sends up to n bytes on k: the bytes sent (all of them, with TLS), or -1 with errno (EAGAIN: the
 * socket's buffer is full, with MSG_DONTWAIT on plain TCP). The caller is the link's only user. */
static ssize_t link_send(const cram_remote* rm, remote_link* k, const void* p, size_t n, int flags)
{
    if (!k->ssl) return send(k->fd, p, n, MSG_NOSIGNAL | flags);
    rm->ssl.clear_error();
    int w = rm->ssl.write(k->ssl, p, (int)n);
    if (w > 0) return w;
    errno = ECONNRESET; /* a TLS write is all or nothing (no partial writes): the stream is lost */
    return -1;
}

/* Receives up to cap bytes from k: > 0, 0 at the end of the stream, or -1 with errno (EAGAIN: nothing yet, the socket's timeout). */
static ssize_t link_recv(cram_remote* rm, remote_link* k, void* buf, size_t cap)
{
    if (!k->ssl) return recv(k->fd, buf, cap, 0);
    rm->ssl.clear_error();
    int got = rm->ssl.read(k->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (got > 0) return got;
    int saved = errno, error = rm->ssl.get_error(k->ssl, got);
    /* The session refused (an alert: under TLS 1.3 a refused client certificate comes after the
     * handshake), not a peer gone mid-stream (which OpenSSL 3 reports as SSL_ERROR_SSL too). */
    if (error == SSL_ERROR_SSL && tls_refused(rm, k->ssl)) add_counter(&rm->stats.tls_failures, 1);
    rm->ssl.clear_error();
    if (error == SSL_ERROR_ZERO_RETURN) return 0;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE || saved == EAGAIN || saved == EWOULDBLOCK) { errno = EAGAIN; return -1; }
    errno = ECONNRESET;
    return -1;
}

static void link_close(const cram_remote* rm, remote_link* k)
{
    if (k->ssl) rm->ssl.ssl_free(k->ssl); /* no close_notify: the stream may be broken, and nothing waits for it */
    if (k->fd >= 0) close(k->fd);
    k->ssl = NULL;
    k->fd = -1;
}

static int send_all(const cram_remote* rm, remote_link* k, const char* p, size_t n)
{
    while (n) {
        ssize_t w = link_send(rm, k, p, n, 0);
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one reply into buf (cap bytes): a simple line (+OK, -ERR ...) or a bulk string. Returns the
 * bulk's length (its bytes at buf + *body), -2 for nil, -3 for an error or simple reply other than
 * +OK (-4), -1 for a socket error or a reply that does not fit. */
static int64_t read_reply(cram_remote* rm, remote_link* k, unsigned char* buf, size_t cap, size_t* body)
{
    size_t have = 0, line = 0;
    for (;;) { /* the first line */
        for (; line + 1 < have; line++)
            if (buf[line] == '\r' && buf[line + 1] == '\n') goto parsed;
        if (have == cap) return -1;
        ssize_t n = link_recv(rm, k, buf + have, cap - have);
        if (n <= 0) { if (n < 0 && errno == EINTR) continue; return -1; }
        have += (size_t)n;
    }
parsed:
    if (buf[0] == '+') return line == 3 && buf[1] == 'O' && buf[2] == 'K' ? -4 : -3;
    if (buf[0] != '$') return -3;
    if (line == 3 && buf[1] == '-' && buf[2] == '1') return -2;
    uint64_t length = 0;
    for (size_t i = 1; i < line; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -1;
        length = length * 10 + (uint64_t)(buf[i] - '0');
    }
    size_t start = line + 2, total = start + length + 2;
    if (total > cap) return -1;
    while (have < total) {
        ssize_t n = link_recv(rm, k, buf + have, total - have);
        if (n <= 0) { if (n < 0 && errno == EINTR) continue; return -1; }
        have += (size_t)n;
    }
    *body = start;
    return (int64_t)length;
}

/* A cluster's redirection, "-MOVED <slot> <a.b.c.d>:<port>" (the line at buf, `length` bytes): the
 * endpoint word it names, or 0. */
static int connect_node(cram_remote* rm, uint64_t endpoint, unsigned char* scratch, remote_link* link);

static uint64_t moved_endpoint(const unsigned char* buf, size_t length)
{
    static const char prefix[] = "-MOVED ";
    if (length < sizeof prefix || memcmp(buf, prefix, sizeof prefix - 1) != 0) return 0;
    size_t i = sizeof prefix - 1;
    while (i < length && buf[i] != ' ') i++; /* the slot */
    i++;
    uint32_t octets[4] = { 0 }, port = 0;
    for (int k = 0; k < 4; k++) {
        uint32_t v = 0;
        size_t digits = 0;
        while (i < length && buf[i] >= '0' && buf[i] <= '9' && digits < 3) v = v * 10 + (uint32_t)(buf[i++] - '0'), digits++;
        if (!digits || v > 255 || i >= length || buf[i] != (k < 3 ? '.' : ':')) return 0;
        octets[k] = v;
        i++;
    }
    size_t digits = 0;
    while (i < length && buf[i] >= '0' && buf[i] <= '9' && digits < 5) port = port * 10 + (uint32_t)(buf[i++] - '0'), digits++;
    if (!digits || !port || port > 65535) return 0;
    uint32_t address = octets[0] | octets[1] << 8 | octets[2] << 16 | octets[3] << 24; /* network order in memory */
    return ((uint64_t)address << 16) | port;
}

/* A redirection in the reply at buf (have bytes): the node's shard moved (a failover promoted its
 * replica, or slots migrated). Points node at the new master (the next connection goes there): 1, or 0. */
static int follow_moved(cram_remote* rm, uint32_t node, const unsigned char* buf, size_t have)
{
    size_t line = 0;
    while (line + 1 < have && !(buf[line] == '\r' && buf[line + 1] == '\n')) line++;
    uint64_t endpoint = moved_endpoint(buf, line);
    if (!endpoint) return 0;
    __atomic_store_n(&rm->endpoints[node], endpoint, __ATOMIC_RELEASE);
    add_counter(&rm->stats.redirects, 1);
    return 1;
}

/* The node's endpoint cannot be reached (a master died): asks another node for q's extent, and if
 * it answers with a redirection, follows it. Without managed code: a failover is followed even
 * while a garbage collection waits for this fault. `scratch` takes the reply. */
static void ask_elsewhere(cram_remote* rm, uint32_t node, const char* request, size_t length, unsigned char* scratch)
{
    for (uint32_t other = 0; other < CRAM_REMOTE_MAX_ENDPOINTS; other++) {
        uint64_t endpoint = __atomic_load_n(&rm->endpoints[other], __ATOMIC_ACQUIRE);
        if (other == node || !endpoint || endpoint == __atomic_load_n(&rm->endpoints[node], __ATOMIC_ACQUIRE)) continue;
        remote_link link;
        if (connect_node(rm, endpoint, scratch, &link) != 0) continue;
        size_t body;
        int ok = send_all(rm, &link, request, length) == 0 && read_reply(rm, &link, scratch, REMOTE_REPLY_MAX, &body) == -3 &&
                 follow_moved(rm, node, scratch, REMOTE_REPLY_MAX);
        link_close(rm, &link);
        if (ok) return;
    }
}

/* With TLS: the session on link->fd, its server's certificate verified (against the name asked
 * for, or the node's address). 0, or -1 (counted). */
static int tls_start(cram_remote* rm, remote_link* link, uint64_t endpoint)
{
    const ssl_api* t = &rm->ssl;
    t->clear_error();
    const char* name = (const char*)rm->config.tls_server_name;
    uint32_t address = (uint32_t)(endpoint >> 16); /* network order in memory */
    int ok = (link->ssl = t->ssl_new(rm->ssl_ctx)) != NULL && t->set_fd(link->ssl, link->fd) == 1 &&
             (name[0] ? t->set1_host(link->ssl, name) == 1 && t->ssl_ctrl(link->ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, 0, (void*)name) == 1
                      : t->param_set1_ip(t->get0_param(link->ssl), (const unsigned char*)&address, 4) == 1) &&
             t->connect(link->ssl) == 1; /* the handshake, the certificate verified (SSL_VERIFY_PEER) */
    if (!ok && link->ssl && tls_refused(rm, link->ssl)) add_counter(&rm->stats.tls_failures, 1);
    t->clear_error();
    return ok ? 0 : -1;
}

/* A blocking TCP connection to endpoint (address << 16 | port), TCP_NODELAY, with REMOTE_IO_SLICE_MS
 * timeouts on every operation (connect included), TLS when configured, AUTHed when a password is
 * set: 0 with *link, or -1. `scratch` (REMOTE_REPLY_MAX) takes AUTH's reply. */
static int connect_node(cram_remote* rm, uint64_t endpoint, unsigned char* scratch, remote_link* link)
{
    link->ssl = NULL;
    int fd = link->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    struct timeval tv = { .tv_sec = 0, .tv_usec = REMOTE_IO_SLICE_MS * 1000 };
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* connect(2) too */
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(endpoint & 0xFFFF)),
                              .sin_addr = { .s_addr = (uint32_t)(endpoint >> 16) } };
    if (connect(fd, (struct sockaddr*)&sa, sizeof sa) != 0 || (rm->config.tls && tls_start(rm, link, endpoint) != 0)) {
        link_close(rm, link);
        return -1;
    }
    add_counter(&rm->stats.connects, 1);
    if (rm->password_len) {
        char request[160], *p = request;
        p = put_bytes(p, "*2\r\n", 4);
        p = put_bulk(p, "AUTH", 4);
        p = put_bulk(p, rm->config.password, rm->password_len);
        size_t body;
        if (send_all(rm, link, request, (size_t)(p - request)) != 0 || read_reply(rm, link, scratch, REMOTE_REPLY_MAX, &body) != -4) {
            link_close(rm, link);
            return -1;
        }
    }
    return 0;
}

static char hex_digit(uint32_t v) { return (char)(v < 10 ? '0' + v : 'a' + v - 10); }

/* The segment's key: "<prefix>:<segment in hex>" (RemoteSegments.KeyOf in managed code builds the same). */
static size_t segment_key(const cram_remote* rm, uint32_t segment, char* key)
{
    char* p = put_bytes(key, rm->config.prefix, rm->prefix_len);
    *p++ = ':';
    char digits[8];
    int n = 0;
    do { digits[n++] = hex_digit(segment & 0xF); segment >>= 4; } while (segment);
    while (n) *p++ = digits[--n];
    return (size_t)(p - key);
}

/* The bytes of an entry's extent on the store: the stored bytes, and the tag when sealed. */
static uint32_t entry_bytes(const cram_remote* rm, const remote_page* entry)
{
    return entry->length + (rm->config.sealed ? CRAM_REMOTE_TAG_BYTES : 0);
}


/* q's GETRANGE request into out (at least 256 bytes); returns its length. */
static size_t getrange_request(const cram_remote* rm, const remote_request* q, char* out)
{
    char key[96], *p = out;
    size_t key_len = segment_key(rm, CRAM_REMOTE_SEGMENT(q->location), key);
    uint64_t start = CRAM_REMOTE_OFFSET(q->location);
    p = put_bytes(p, "*4\r\n", 4);
    p = put_bulk(p, "GETRANGE", 8);
    p = put_bulk(p, key, key_len);
    p = put_bulk_u64(p, start);
    p = put_bulk_u64(p, start + q->span - 1);
    return (size_t)(p - out);
}

/* One GETRANGE of q's extent on lane l (the faulting thread's way). 0 with the bytes at *out, or -1 (to be retried). */
static int fetch_once(cram_remote* rm, remote_lane* l, const remote_request* q, const unsigned char** out)
{
    uint32_t node = CRAM_REMOTE_NODE(q->location);
    uint64_t endpoint = __atomic_load_n(&rm->endpoints[node], __ATOMIC_ACQUIRE);
    if (!endpoint) return -1;
    remote_link* link = &l->link[node];
    if (link->fd >= 0 && l->peer[node] != endpoint) link_close(rm, link); /* failed over meanwhile */
    char request[256];
    size_t n_request = getrange_request(rm, q, request);
    if (link->fd < 0) {
        if (connect_node(rm, endpoint, l->reply, link) != 0) {
            ask_elsewhere(rm, node, request, n_request, l->reply); /* a dead master: where did its slots go? */
            return -1;
        }
        l->peer[node] = endpoint;
    }
    uint64_t t0 = now_ns();
    size_t body;
    int64_t n;
    if (send_all(rm, link, request, n_request) != 0 || (n = read_reply(rm, link, l->reply, REMOTE_REPLY_MAX, &body)) == -1) {
        link_close(rm, link); /* the stream's state is unknown: a new connection */
        return -1;
    }
    if (n == -3 && follow_moved(rm, node, l->reply, REMOTE_REPLY_MAX)) return -1; /* again, at the new master */
    if (n != (int64_t)q->span) return -1; /* nil (no such key yet: a failover), an error reply, a short value */
    add_counter(&rm->stats.requests, 1);
    add_counter(&rm->stats.fetch_ns, now_ns() - t0);
    add_counter(&rm->stats.fetch_bytes, (uint64_t)n);
    *out = l->reply + body;
    return 0;
}

/* ------------------------------------------------------------------ open, check, decode, publish */

/* The stored bytes of entry q from its extent (at `offset` in `segment`): AES-GCM opened into plain (sealed), else as they are. */
static const unsigned char* open_extent(cram_remote* rm, void* cipher, unsigned char* plain, const remote_page* q, uint64_t segment, uint32_t offset,
                                        const unsigned char* extent)
{
    if (!rm->config.sealed) return extent;
    uint64_t t0 = now_ns();
    unsigned char iv[12];
    memcpy(iv, &segment, 8); /* little-endian, as managed code builds it */
    memcpy(iv + 8, &offset, 4);
    int n = 0, m = 0;
    const crypto_api* c = &rm->crypto;
    int ok = c->decrypt_init(cipher, NULL, NULL, NULL, iv) == 1 &&
             c->decrypt_update(cipher, plain, &n, extent, (int)q->length) == 1 && n == (int)q->length &&
             c->ctx_ctrl(cipher, EVP_CTRL_GCM_SET_TAG, CRAM_REMOTE_TAG_BYTES, (void*)(extent + q->length)) == 1 &&
             c->decrypt_final(cipher, plain + n, &m) == 1;
    add_counter(&rm->stats.open_ns, now_ns() - t0);
    if (!ok) {
        add_counter(&rm->stats.auth_failures, 1);
        return NULL;
    }
    return plain;
}

/* The page of entry q into page: 0, or -1 (checksum or LZ4 failed: the stored copy is bad). */
static int decode(cram_engine* e, cram_remote* rm, unsigned char* page, const remote_page* q, const unsigned char* stored, uint64_t** counter, cram_shared* s)
{
    uint64_t t0 = now_ns();
    int ok = crc32c(stored, q->length) == q->checksum;
    if (!ok) add_counter(&s->stats.checksum_failures, 1);
    else if (q->flags & CRAM_SLOT_RAW) {
        memcpy(page, stored, CRAM_PAGE_SIZE);
        *counter = &s->stats.faults_swapin_raw;
    } else if (q->flags & CRAM_SLOT_ZSTD) { /* recompressed before it was written back ("Codecs") */
        ok = zstd_decode(e, 1, q->flags, stored, q->length, page) == 0;
        *counter = &s->stats.faults_swapin_zstd;
        if (!ok) add_counter(&s->stats.service_errors, 1);
    } else {
        ok = LZ4_decompress_safe((const char*)stored, (char*)page, (int)q->length, CRAM_PAGE_SIZE) == (int)CRAM_PAGE_SIZE;
        *counter = &s->stats.faults_swapin_lz4;
        if (!ok) add_counter(&s->stats.service_errors, 1);
    }
    add_counter(&rm->stats.decode_ns, now_ns() - t0);
    return ok ? 0 : -1;
}

/* Maps the page and publishes it (FETCHING -> CLEAN or DIRTY), or on failure marks the slot bad and
 * puts the page back to EVICTED (the retried access faults again and gets SIGBUS, as for any copy
 * that cannot be read). Either way whoever waits is woken and the region's fetch count drops. */
static void publish(cram_engine* e, const remote_request* request, uint32_t i, const unsigned char* page, uint64_t* counter)
{
    cram_shared* s = e->shared;
    cram_remote* rm = e->remote;
    cram_region_desc* r = request->region;
    const remote_page* q = &request->pages[i];
    int write = i == 0 && request->write, ahead = i > 0 || request->prefetch;
    uint64_t* pte = &r->pte[q->page];
    uint64_t addr = r->base + (q->page << CRAM_PAGE_SHIFT);
    cram_slot* slot = slot_get(s, q->slot_id);
    if (page && uffd_copy(e->uffd, addr, page, CRAM_PAGE_SIZE, !write) != 0 && errno != EEXIST) {
        add_counter(&s->stats.service_errors, 1);
        page = NULL; /* not mapped: back to EVICTED, not bad (the copy is fine); the next fault tries again */
        counter = NULL;
    } else if (!page) {
        slot_flags_or(slot, CRAM_SLOT_BAD); /* stays EVICTED and named; freed with its region */
        add_counter(&rm->stats.fetch_failures, 1);
    }
    if (page) {
        /* Counted before the page is published and its thread woken, as every swap-in is. */
        resident_add(e, 1);
        if (!write) {
            clean_copy_count(s, q->slot_id, +1);
            slot_flags_or(slot, CRAM_SLOT_REFERENCED);
        }
        add_counter(&rm->stats.fetches, 1);
        if (ahead) { /* read ahead or prefetched, as the local window's pages: not a fault */
            add_counter(request->prefetch ? &s->stats.prefetched_pages : &s->stats.readahead_pages, 1);
        } else {
            add_counter(counter, 1);
            add_counter(&r->faults_swapin, 1);
            latency_count(s->stats.swapin_latency_us_log2, request->t0);
        }
        pte_store(pte, q->next);
        if (write) stale_push(s, q->slot_id);
    } else {
        pte_store(pte, q->old);
    }
    engine_wake(e, addr, CRAM_PAGE_SIZE);
    futex_wake_word(pte);
    __atomic_fetch_sub(&rm->inflight[r->id], 1, __ATOMIC_RELEASE);
    __atomic_fetch_sub(&rm->stats.inflight, 1, __ATOMIC_RELAXED);
}

/* Ends a fetch with the extents the store returned, back to back (NULL: it never answered in
 * time): each entry opened, decoded and published, or failed (said once on stderr, as the kernel
 * logs a swap read error). */
static void finish(cram_engine* e, const remote_request* q, const unsigned char* extent, void* cipher, unsigned char* plain, unsigned char* page)
{
    cram_remote* rm = e->remote;
    uint64_t segment = CRAM_REMOTE_SEGMENT(q->location);
    for (uint32_t i = 0; i < q->count; i++) {
        const remote_page* entry = &q->pages[i];
        uint32_t offset = CRAM_REMOTE_OFFSET(q->location) + entry->offset;
        const unsigned char* stored = extent ? open_extent(rm, cipher, plain, entry, segment, offset, extent + entry->offset) : NULL;
        uint64_t* counter = NULL;
        int ok = stored && decode(e, rm, page, entry, stored, &counter, e->shared) == 0;
        if (!ok) {
            char line[240];
            int n = snprintf(line, sizeof line, "cramcore: remote fetch of page at 0x%llx failed: %s (segment %x, node %u)\n",
                             (unsigned long long)(q->region->base + (entry->page << CRAM_PAGE_SHIFT)),
                             !extent ? "the store did not answer within the read timeout"
                                     : !stored ? "the sealed extent failed its AES-GCM tag (tampered with, or not this engine's)"
                                               : "the stored copy on the remote store failed its checksum",
                             (uint32_t)segment, CRAM_REMOTE_NODE(q->location));
            if (n > 0) { ssize_t w = write(STDERR_FILENO, line, (size_t)(n < (int)sizeof line ? n : (int)sizeof line - 1)); (void)w; }
        }
        publish(e, q, i, ok ? page : NULL, counter);
    }
}

/* ------------------------------------------------------------------ the faulting thread's fetch */

static remote_lane* lane_take(cram_remote* rm)
{
    for (uint32_t spins = 0;; spins++) {
        for (uint32_t i = 0; i < rm->lane_count; i++) {
            uint32_t expected = 0;
            if (!__atomic_load_n(&rm->lanes[i].busy, __ATOMIC_RELAXED) &&
                __atomic_compare_exchange_n(&rm->lanes[i].busy, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return &rm->lanes[i];
        }
        if (spins < 16) sched_yield(); else sleep_ns(50000);
    }
}

static void lane_release(remote_lane* l) { __atomic_store_n(&l->busy, 0, __ATOMIC_RELEASE); }

/* Runs the fetch a lane holds to its end, retrying (reconnecting, with backoff) until its deadline; then lets the lane go. */
void remote_run(cram_engine* e, remote_lane* l)
{
    cram_remote* rm = e->remote;
    const remote_request* q = &l->request;
    uint64_t backoff = 200000;
    const unsigned char* extent = NULL;
    while (fetch_once(rm, l, q, &extent) != 0) {
        if (now_ns() >= q->deadline) { extent = NULL; break; }
        add_counter(&rm->stats.fetch_retries, 1);
        sleep_ns(backoff); /* the store restarting, a failover: back off, up to 50 ms between tries */
        if (backoff < 50000000) backoff *= 2;
    }
    finish(e, q, extent, l->cipher, l->plain, l->page);
    lane_release(l);
}

/* ------------------------------------------------------------------ the service thread's fetch: node connections */

/* Under n->lock: sends the requests not yet on the wire, in order (with TLS, only the reader calls
 * it). 0, or -1 (the connection is closed: the reader reconnects and sends them again). */
static int node_send_pending(cram_remote* rm, remote_node* n, int flags)
{
    while (n->link.fd >= 0 && !n->broken && n->sent < n->count) {
        char request[256];
        size_t length = getrange_request(rm, &n->fifo[(n->head + n->sent) % REMOTE_QUEUE], request);
        ssize_t w = link_send(rm, &n->link, request, length, flags);
        if (w == (ssize_t)length) { n->sent++; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && (flags & MSG_DONTWAIT)) return 0; /* the reader sends it */
        /* A partial request would corrupt the stream: start over on a new connection. The reader owns
         * the descriptor (it may be in recv on it): shut it down, and the reader closes it. */
        shutdown(n->link.fd, SHUT_RDWR);
        n->broken = 1;
        return -1;
    }
    return 0;
}

/* Wakes the reader of a TLS connection to send what was queued (eventfd: async-signal-safe). */
static void node_wake(remote_node* n)
{
    uint64_t one = 1;
    ssize_t w = write(n->wake, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already set, the reader will look */
}

/* The service, under the engine lock: q goes on its node's connection now, without waiting. */
static void node_submit(cram_remote* rm, const remote_request* q)
{
    remote_node* n = rm->nodes[CRAM_REMOTE_NODE(q->location)];
    for (;;) {
        pthread_mutex_lock(&n->lock);
        if (n->count < REMOTE_QUEUE) {
            n->fifo[(n->head + n->count) % REMOTE_QUEUE] = *q;
            if (++n->count > rm->stats.queued_peak) rm->stats.queued_peak = n->count;
            if (rm->config.tls) { node_wake(n); pthread_cond_signal(&n->work); } /* the reader alone uses a TLS session */
            else if (n->link.fd >= 0 && !n->broken && n->sent == n->count - 1) node_send_pending(rm, n, MSG_DONTWAIT); /* in order: only when all before it are sent */
            else pthread_cond_signal(&n->work); /* no connection: the reader makes one and sends */
            pthread_mutex_unlock(&n->lock);
            return;
        }
        pthread_mutex_unlock(&n->lock); /* full: the reader drains it without the engine lock */
        sleep_ns(50000);
    }
}

/* Under n->lock, with no connection (nothing on the wire, so any request may go): takes the requests
 * past their deadline out of the FIFO, then fails them without the lock. */
static void node_expire(cram_engine* e, remote_node* n, unsigned char* plain, unsigned char* page)
{
    uint64_t now = now_ns();
    uint32_t kept = 0, expired = 0;
    for (uint32_t i = 0; i < n->count; i++) {
        remote_request q = n->fifo[(n->head + i) % REMOTE_QUEUE];
        if (now < q.deadline) n->fifo[(n->head + kept++) % REMOTE_QUEUE] = q;
        else n->expired[expired++] = q;
    }
    n->count = kept;
    if (!expired) return;
    pthread_mutex_unlock(&n->lock);
    for (uint32_t i = 0; i < expired; i++) finish(e, &n->expired[i], NULL, n->cipher, plain, page);
    pthread_mutex_lock(&n->lock);
}

/* One reply at buf (have bytes): its length in bytes, 0 if incomplete, -1 if it is not RESP. *value
 * is the bulk string's length (-2: nil or an error reply) and *body where its bytes start. */
static int64_t parse_reply(const unsigned char* buf, size_t have, int64_t* value, size_t* body)
{
    size_t line = 0;
    while (line + 1 < have && !(buf[line] == '\r' && buf[line + 1] == '\n')) line++;
    if (line + 1 >= have) return have > 256 ? -1 : 0;
    if (buf[0] == '-' || buf[0] == '+' || buf[0] == ':') { *value = -2; return (int64_t)line + 2; }
    if (buf[0] != '$') return -1;
    if (line == 3 && buf[1] == '-' && buf[2] == '1') { *value = -2; return 5; }
    uint64_t length = 0;
    for (size_t i = 1; i < line; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -1;
        length = length * 10 + (uint64_t)(buf[i] - '0');
    }
    if (length > REMOTE_REPLY_MAX) return -1;
    size_t total = line + 2 + length + 2;
    if (have < total) return 0;
    *value = (int64_t)length;
    *body = line + 2;
    return (int64_t)total;
}

/* Under n->lock: the connection is done (an error, the end of the stream, a stall, a failover). The
 * requests that were on it go out again on the next one, in order. */
static void node_disconnect(const cram_remote* rm, remote_node* n)
{
    link_close(rm, &n->link);
    n->sent = 0;
    n->broken = 0;
}

/* The reader's wait for a TLS connection (the reader alone uses the session): sends what the fault
 * path queued, then waits for a reply or for more to send (the eventfd) and receives. As recv: > 0,
 * 0 at the end of the stream, -1 with errno EAGAIN for nothing yet. */
static ssize_t node_tls_receive(cram_remote* rm, remote_node* n, remote_link* link, unsigned char* buf, size_t cap)
{
    pthread_mutex_lock(&n->lock);
    node_send_pending(rm, n, 0);
    int broken = n->broken;
    pthread_mutex_unlock(&n->lock);
    if (broken) { errno = EAGAIN; return -1; } /* the loop's top closes it */
    if (!rm->ssl.pending(link->ssl)) { /* decrypted bytes already in the session need no wait */
        struct pollfd p[2] = { { .fd = link->fd, .events = POLLIN }, { .fd = n->wake, .events = POLLIN } };
        int ready = poll(p, 2, REMOTE_IO_SLICE_MS);
        if (ready > 0 && p[1].revents) { uint64_t v; ssize_t r = read(n->wake, &v, sizeof v); (void)r; }
        if (ready <= 0 || !p[0].revents) { errno = EAGAIN; return -1; }
    }
    return link_recv(rm, link, buf, cap);
}

#define REMOTE_STALL_NS (1000ull * 1000 * 1000) /* requests on the wire with no reply this long: a dead connection */

/* A node's reader (thread cram-remote): connects (again after any failure, following the node's
 * endpoint through a failover), sends what the service could not, and finishes each fetch as its
 * reply arrives; retries what failed until its deadline, then fails it. Never takes the engine lock. */
static void* node_reader_main(void* arg)
{
    remote_node* n = arg;
    cram_engine* e = n->engine;
    cram_remote* rm = e->remote;
    unsigned char* buf = n->buf, *plain = n->buf + REMOTE_READER_BUFFER, *page = plain + CRAM_PAGE_SIZE;
    size_t have = 0;
    uint64_t backoff = 200000, progress = now_ns();
    /* Below the fault service and the application's threads: where the CPUs are saturated (the
     * store on the same host, more runnable threads than CPUs), a remote completion waits for a CPU
     * rather than the local faults. No privilege needed to lower one's own priority; never raised. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), REMOTE_READER_NICE);
    for (;;) {
        pthread_mutex_lock(&n->lock);
        if (__atomic_load_n(&rm->stop, __ATOMIC_ACQUIRE)) { pthread_mutex_unlock(&n->lock); break; }
        uint64_t endpoint = __atomic_load_n(&rm->endpoints[n->index], __ATOMIC_ACQUIRE);
        if (n->link.fd >= 0 && (n->broken || n->peer != endpoint)) node_disconnect(rm, n); /* a failed send, or a failover */
        if (n->link.fd < 0) {
            have = 0;
            node_expire(e, n, plain, page);
            pthread_mutex_unlock(&n->lock);
            remote_link link = { .fd = -1 };
            int connected = endpoint && connect_node(rm, endpoint, buf, &link) == 0;
            pthread_mutex_lock(&n->lock);
            if (!connected) {
                if (n->count) {
                    add_counter(&rm->stats.fetch_retries, 1);
                    char request[256];
                    size_t length = getrange_request(rm, &n->fifo[n->head], request);
                    pthread_mutex_unlock(&n->lock);
                    ask_elsewhere(rm, n->index, request, length, buf); /* a dead master: where did its slots go? */
                    pthread_mutex_lock(&n->lock);
                }
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_nsec += (long)backoff;
                if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
                if (!__atomic_load_n(&rm->stop, __ATOMIC_ACQUIRE)) pthread_cond_timedwait(&n->work, &n->lock, &until);
                pthread_mutex_unlock(&n->lock);
                if (backoff < 50000000) backoff *= 2; /* the store restarting, a failover: up to 50 ms between tries */
                continue;
            }
            backoff = 200000;
            n->link = link;
            n->peer = endpoint;
            n->sent = 0;
            node_send_pending(rm, n, 0);
            progress = now_ns();
            pthread_mutex_unlock(&n->lock);
            continue;
        }
        remote_link link = n->link;
        uint32_t on_wire = n->sent;
        pthread_mutex_unlock(&n->lock);

        ssize_t got = link.ssl ? node_tls_receive(rm, n, &link, buf + have, REMOTE_READER_BUFFER - have)
                               : recv(link.fd, buf + have, REMOTE_READER_BUFFER - have, 0);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (on_wire && now_ns() - progress > REMOTE_STALL_NS) { /* no reply for a second: the node is gone */
                pthread_mutex_lock(&n->lock);
                node_disconnect(rm, n);
                add_counter(&rm->stats.fetch_retries, 1);
                pthread_mutex_unlock(&n->lock);
            } else if (!on_wire) {
                progress = now_ns();
            }
            continue;
        }
        if (got <= 0) { /* the end of the stream, or an error: again on a new connection */
            pthread_mutex_lock(&n->lock);
            node_disconnect(rm, n);
            if (n->count) add_counter(&rm->stats.fetch_retries, 1);
            pthread_mutex_unlock(&n->lock);
            continue;
        }
        have += (size_t)got;
        progress = now_ns();
        size_t at = 0;
        for (;;) {
            int64_t value = 0;
            size_t body = 0;
            int64_t used = parse_reply(buf + at, have - at, &value, &body);
            if (used == 0) break;
            pthread_mutex_lock(&n->lock);
            if (used < 0 || !n->sent) { /* not RESP, or a reply to nothing: the stream is lost */
                node_disconnect(rm, n);
                pthread_mutex_unlock(&n->lock);
                have = at = 0;
                break;
            }
            remote_request q = n->fifo[n->head];
            n->head = (n->head + 1) % REMOTE_QUEUE;
            n->count--;
            n->sent--;
            pthread_mutex_unlock(&n->lock);
            if (value == (int64_t)q.span) {
                add_counter(&rm->stats.fetch_bytes, (uint64_t)value);
                add_counter(&rm->stats.requests, 1);
                add_counter(&rm->stats.fetch_ns, now_ns() - q.t0);
                finish(e, &q, buf + at + body, n->cipher, plain, page);
            } else if (now_ns() < q.deadline) { /* nil (a failover in progress), an error reply, a short value: again, a moment later */
                if (follow_moved(rm, n->index, buf + at, have - at)) { /* the shard moved: reconnect there, send again */
                    pthread_mutex_lock(&n->lock);
                    node_disconnect(rm, n);
                    pthread_mutex_unlock(&n->lock);
                }
                add_counter(&rm->stats.fetch_retries, 1);
                sleep_ns(1000000);
                pthread_mutex_lock(&n->lock);
                n->fifo[(n->head + n->count) % REMOTE_QUEUE] = q;
                n->count++;
                if (n->link.fd >= 0 && !n->broken && n->sent == n->count - 1) node_send_pending(rm, n, 0);
                pthread_mutex_unlock(&n->lock);
            } else {
                finish(e, &q, NULL, n->cipher, plain, page);
            }
            at += (size_t)used;
        }
        if (at) {
            memmove(buf, buf + at, have - at);
            have -= at;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ the fault path's side */

/* The word a page evicted with word p gets once fetched: CLEAN(slot) for a read, DIRTY for a write,
 * with the working-set bits resolve_swapin would give it (`fault`: a fault's own page, not read ahead). */
static uint64_t fetched_word(cram_shared* s, uint64_t p, int write, int fault)
{
    uint64_t id = CRAM_PTE_SLOT(p);
    uint64_t next = write ? CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED : CRAM_PTE_MAKE(CRAM_PTE_CLEAN, id);
    if (!fault) return next; /* readahead sets neither ACTIVE nor TRIAL ("Working set") */
    if (refault_activates(s, p)) {
        add_counter(&s->stats.workingset_activations, 1);
        return next | CRAM_PTE_ACTIVE;
    }
    return write ? next : next | CRAM_PTE_TRIAL;
}

/* Under the engine lock: page (word p) EVICTED -> FETCHING as q's next entry, its extent `offset`
 * bytes into the span; logged, counted in flight. */
static int claim_entry(cram_engine* e, cram_region_desc* r, remote_request* q, uint64_t page, uint64_t p, int write, uint32_t offset)
{
    cram_shared* s = e->shared;
    uint64_t id = CRAM_PTE_SLOT(p);
    cram_slot* slot = slot_get(s, id);
    if (!pte_cas(&r->pte[page], p, CRAM_PTE_MAKE(CRAM_PTE_FETCHING, id))) return 0;
    remote_page* entry = &q->pages[q->count++];
    *entry = (remote_page){
        .page = page, .old = p, .next = fetched_word(s, p, write, q->count == 1), .slot_id = id, .offset = offset,
        .checksum = slot->checksum, .length = slot->length, .flags = (uint8_t)slot_flags(slot),
    };
    q->span = offset + entry_bytes(e->remote, entry);
    fault_log_append(s, r->id, page);
    __atomic_fetch_add(&e->remote->inflight[r->id], 1, __ATOMIC_ACQ_REL);
    __atomic_fetch_add(&e->remote->stats.inflight, 1, __ATOMIC_RELAXED);
    return 1;
}

/* Under the engine lock: adds to q the EVICTED pages of [next, end) whose extents follow q's last one
 * in the segment, up to REMOTE_WINDOW_MAX entries. Pages with no extent in the segment (resident,
 * empty, zero or same-filled, in the pool) are passed over, and so is the extent of a resident page
 * that still names one there (its bytes are read and dropped), so a scan of mixed or half-read
 * memory still takes a window a request. */
static void claim_window(cram_engine* e, cram_region_desc* r, remote_request* q, uint64_t next, uint64_t end)
{
    cram_shared* s = e->shared;
    uint32_t tag = e->remote->config.sealed ? CRAM_REMOTE_TAG_BYTES : 0;
    for (; next < end && q->count < REMOTE_WINDOW_MAX; next++) {
        uint64_t w = load_acquire(&r->pte[next]);
        uint32_t state = CRAM_PTE_STATE(w);
        if (!pte_names_slot(state) || CRAM_PTE_SLOT(w) == CRAM_SLOT_ZERO) continue; /* no copy, or a zero page */
        cram_slot* ahead = slot_get(s, CRAM_PTE_SLOT(w));
        if (ahead->backend != CRAM_BACKEND_REMOTE) continue; /* its copy is elsewhere */
        uint64_t bytes = (uint64_t)ahead->length + tag;
        if (ahead->location != q->location + q->span || q->span + bytes > REMOTE_WINDOW_MAX * (CRAM_PAGE_SIZE + CRAM_REMOTE_TAG_BYTES)) break;
        if (state != CRAM_PTE_EVICTED) { q->span += (uint32_t)bytes; continue; } /* resident (or being fetched): passed over */
        if ((slot_flags(ahead) & CRAM_SLOT_BAD) || !claim_entry(e, r, q, next, w, 0, q->span)) break;
    }
}

/* Whether a fetch of a page at `location` can be made: a read half configured and its node known. */
/* Whether this engine's faulting threads fetch for themselves on lanes (plain TCP), rather than
 * through the node's reader (service-thread engines, and TLS: a session cannot run in a signal handler). */
static int on_lanes(const cram_engine* e) { return e->faulting_thread && !e->remote->config.tls; }

static int fetchable(const cram_engine* e, uint64_t location)
{
    const cram_remote* rm = e->remote;
    uint32_t node = CRAM_REMOTE_NODE(location);
    return rm && (on_lanes(e) ? __atomic_load_n(&rm->endpoints[node], __ATOMIC_ACQUIRE) != 0
                              : __atomic_load_n(&rm->nodes[node], __ATOMIC_ACQUIRE) != NULL);
}

uint32_t remote_prefetch(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t end, struct remote_lane** run)
{
    ASSERT_ENGINE_LOCKED(e);
    cram_shared* s = e->shared;
    uint64_t p = load_acquire(&r->pte[page]);
    if (CRAM_PTE_STATE(p) != CRAM_PTE_EVICTED || CRAM_PTE_SLOT(p) == CRAM_SLOT_ZERO) return 0;
    cram_slot* slot = slot_get(s, CRAM_PTE_SLOT(p));
    if (slot->backend != CRAM_BACKEND_REMOTE || (slot_flags(slot) & CRAM_SLOT_BAD) || !fetchable(e, slot->location)) return 0;
    uint64_t t0 = now_ns();
    remote_request q = { .region = r, .location = slot->location, .t0 = t0, .prefetch = 1,
                         .deadline = t0 + (uint64_t)e->remote->config.timeout_ms * 1000000ull };
    if (!claim_entry(e, r, &q, page, p, 0, 0)) return 0;
    claim_window(e, r, &q, page + 1, end);
    if (on_lanes(e)) { /* the prefetching thread runs it, once it lets the lock go */
        remote_lane* l = lane_take(e->remote);
        l->request = q;
        *run = l;
    } else {
        node_submit(e->remote, &q);
    }
    return q.count;
}

int remote_claim(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t p, int write, uint64_t t0)
{
    ASSERT_ENGINE_LOCKED(e);
    cram_shared* s = e->shared;
    cram_remote* rm = e->remote;
    cram_slot* slot = slot_get(s, CRAM_PTE_SLOT(p));
    uint64_t location = slot->location;
    if (!fetchable(e, location)) { /* never configured, or a node never published */
        add_counter(&s->stats.service_errors, 1);
        return 0;
    }
    remote_request q = { .region = r, .location = location, .t0 = t0,
                         .deadline = t0 + (uint64_t)rm->config.timeout_ms * 1000000ull, .write = (uint32_t)write };
    if (!claim_entry(e, r, &q, page, p, write, 0)) { /* only code holding the lock leaves EVICTED: cannot happen */
        add_counter(&s->stats.service_errors, 1);
        engine_wake(e, r->base + (page << CRAM_PAGE_SHIFT), CRAM_PAGE_SIZE);
        return 1;
    }
    /* A read that continues a sequential stream: the pages after it whose extents follow its own,
     * up to the stream's window (claim_window). */
    uint64_t end = write || __atomic_load_n(&s->memory_wait_us, __ATOMIC_RELAXED) ? page + 1 : swapin_stream_step(e, r, page);
    claim_window(e, r, &q, page + 1, end);
    if (on_lanes(e)) { /* this thread fetches on a lane, once it lets the lock go (remote_run_pending) */
        remote_lane* l = lane_take(rm); /* lanes are let go without the engine lock: a wait here ends */
        l->request = q;
        t_pending = l;
        return 1;
    }
    node_submit(rm, &q); /* a faulting thread with TLS: its access faults again, finds the page FETCHING and waits (remote_wait) */
    return 1;
}

void remote_run_pending(cram_engine* e)
{
    remote_lane* l = t_pending;
    if (!l) return;
    t_pending = NULL;
    remote_run(e, l);
}

void remote_wait(cram_engine* e, uint64_t* pte)
{
    remote_note_wait(e);
    for (;;) {
        uint64_t p = load_acquire(pte);
        if (CRAM_PTE_STATE(p) != CRAM_PTE_FETCHING) return;
        struct timespec ts = { .tv_sec = 0, .tv_nsec = 10000000 }; /* and look again: a wake-up is never missed for long */
        syscall(SYS_futex, (uint32_t*)(void*)pte, FUTEX_WAIT_PRIVATE, (uint32_t)p, &ts, NULL, 0);
    }
}

int remote_busy(const cram_engine* e)
{
    return e->remote && __atomic_load_n(&e->remote->stats.inflight, __ATOMIC_RELAXED) != 0;
}

void remote_note_wait(cram_engine* e)
{
    if (e->remote) add_counter(&e->remote->stats.waits, 1);
}

void remote_quiesce(cram_engine* e, const cram_region_desc* r)
{
    ASSERT_ENGINE_LOCKED(e);
    if (!e->remote) return;
    while (__atomic_load_n(&e->remote->inflight[r->id], __ATOMIC_ACQUIRE)) sleep_ns(20000); /* bounded by the fetch timeout */
}

/* ------------------------------------------------------------------ configuration */

static int crypto_load(cram_remote* rm)
{
    rm->libcrypto = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!rm->libcrypto) { errno = ENOENT; return -1; }
    crypto_api* c = &rm->crypto;
    *(void**)&c->ctx_new = dlsym(rm->libcrypto, "EVP_CIPHER_CTX_new");
    *(void**)&c->ctx_free = dlsym(rm->libcrypto, "EVP_CIPHER_CTX_free");
    *(void**)&c->aes_256_gcm = dlsym(rm->libcrypto, "EVP_aes_256_gcm");
    *(void**)&c->decrypt_init = dlsym(rm->libcrypto, "EVP_DecryptInit_ex");
    *(void**)&c->decrypt_update = dlsym(rm->libcrypto, "EVP_DecryptUpdate");
    *(void**)&c->decrypt_final = dlsym(rm->libcrypto, "EVP_DecryptFinal_ex");
    *(void**)&c->ctx_ctrl = dlsym(rm->libcrypto, "EVP_CIPHER_CTX_ctrl");
    if (!c->ctx_new || !c->ctx_free || !c->aes_256_gcm || !c->decrypt_init || !c->decrypt_update || !c->decrypt_final || !c->ctx_ctrl) {
        errno = ENOSYS;
        return -1;
    }
    return 0;
}

/* TLS: libssl's client API and the context every session is made from (min. TLS 1.2, the peer
 * verified against config.tls_ca_file or the system's trust store, the client certificate if any).
 * -1 with errno: ENOENT (no libssl.so.3), ENOSYS (a symbol missing), EINVAL (a file that does not load). */
static int tls_load(cram_remote* rm)
{
    rm->libssl = dlopen("libssl.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!rm->libssl) { errno = ENOENT; return -1; }
    ssl_api* t = &rm->ssl;
    static const char* const names[] = {
        "TLS_client_method", "SSL_CTX_new", "SSL_CTX_free", "SSL_CTX_ctrl", "SSL_CTX_set_verify",
        "SSL_CTX_load_verify_locations", "SSL_CTX_set_default_verify_paths", "SSL_CTX_use_certificate_chain_file",
        "SSL_CTX_use_PrivateKey_file", "SSL_CTX_check_private_key", "SSL_new", "SSL_free", "SSL_set_fd", "SSL_set1_host",
        "SSL_ctrl", "SSL_get0_param", "X509_VERIFY_PARAM_set1_ip", "SSL_connect", "SSL_read", "SSL_write", "SSL_pending",
        "SSL_get_error", "SSL_get_verify_result", "ERR_peek_error", "ERR_clear_error",
    };
    _Static_assert(sizeof names / sizeof names[0] == sizeof(ssl_api) / sizeof(void*), "one name per libssl function");
    void** slots = (void**)(void*)t;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(slots[i] = dlsym(rm->libssl, names[i]))) { errno = ENOSYS; return -1; } /* libcrypto's, through libssl's dependencies */
    }
    t->clear_error();
    const char* ca = (const char*)rm->config.tls_ca_file;
    const char* cert = (const char*)rm->config.tls_cert_file;
    const char* key = rm->config.tls_key_file[0] ? (const char*)rm->config.tls_key_file : cert;
    int ok = (rm->ssl_ctx = t->ctx_new(t->client_method())) != NULL &&
             t->ctx_ctrl(rm->ssl_ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_2_VERSION, NULL) == 1 &&
             (ca[0] ? t->ctx_load_verify_locations(rm->ssl_ctx, ca, NULL) : t->ctx_set_default_verify_paths(rm->ssl_ctx)) == 1 &&
             (!cert[0] || (t->ctx_use_certificate_chain_file(rm->ssl_ctx, cert) == 1 &&
                           t->ctx_use_private_key_file(rm->ssl_ctx, key, SSL_FILETYPE_PEM) == 1 && t->ctx_check_private_key(rm->ssl_ctx) == 1));
    t->clear_error(); /* nothing left on this (managed) thread's OpenSSL error queue for .NET to misread */
    if (!ok) { errno = EINVAL; return -1; }
    t->ctx_set_verify(rm->ssl_ctx, SSL_VERIFY_PEER, NULL);
    return 0;
}

/* A cipher context keyed with the engine's key (only the IV changes per entry), or NULL unsealed / on failure. */
static void* cipher_new(cram_remote* rm, int* failed)
{
    if (!rm->config.sealed) return NULL;
    void* cipher = rm->crypto.ctx_new();
    if (!cipher || rm->crypto.decrypt_init(cipher, rm->crypto.aes_256_gcm(), NULL, rm->config.key, NULL) != 1) {
        if (cipher) rm->crypto.ctx_free(cipher);
        *failed = 1;
        return NULL;
    }
    return cipher;
}

#define NODE_BUFFERS (REMOTE_READER_BUFFER + 2 * CRAM_PAGE_SIZE)

static void node_free(cram_remote* rm, remote_node* n)
{
    if (n->buf) munmap(n->buf, NODE_BUFFERS);
    if (n->cipher) rm->crypto.ctx_free(n->cipher);
    link_close(rm, &n->link);
    if (n->wake >= 0) close(n->wake);
    pthread_cond_destroy(&n->work);
    pthread_mutex_destroy(&n->lock);
    munmap(n, sizeof *n);
}

void remote_destroy(cram_engine* e)
{
    cram_remote* rm = e->remote;
    if (!rm) return;
    __atomic_store_n(&rm->stop, 1, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < CRAM_REMOTE_MAX_ENDPOINTS; i++) {
        remote_node* n = rm->nodes[i];
        if (!n) continue;
        pthread_mutex_lock(&n->lock);
        if (n->link.fd >= 0) shutdown(n->link.fd, SHUT_RDWR); /* out of recv (or poll) */
        pthread_cond_broadcast(&n->work);
        pthread_mutex_unlock(&n->lock);
        if (n->started) pthread_join(n->reader, NULL);
        node_free(rm, n);
        rm->nodes[i] = NULL;
    }
    for (uint32_t i = 0; i < rm->lane_count; i++) {
        remote_lane* l = &rm->lanes[i];
        for (uint32_t k = 0; k < CRAM_REMOTE_MAX_ENDPOINTS; k++) link_close(rm, &l->link[k]);
        if (l->cipher) rm->crypto.ctx_free(l->cipher);
        if (l->reply) munmap(l->reply, REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE);
    }
    if (rm->ssl_ctx) rm->ssl.ctx_free(rm->ssl_ctx);
    if (rm->libssl) dlclose(rm->libssl);
    if (rm->libcrypto) dlclose(rm->libcrypto);
    explicit_bzero(rm->config.key, sizeof rm->config.key);
    munmap(rm, sizeof *rm);
    e->remote = NULL;
}

EXPORT int CramNative_RemoteConfigure(cram_engine* e, const cram_remote_config* config)
{
    if (!e || !config || e->remote || config->timeout_ms == 0 || config->lanes == 0 || config->lanes > REMOTE_LANES_MAX ||
        config->sealed > 1 || config->tls > 1 || !memchr(config->prefix, 0, sizeof config->prefix) ||
        !memchr(config->password, 0, sizeof config->password) || !config->prefix[0] ||
        !memchr(config->tls_server_name, 0, sizeof config->tls_server_name) || !memchr(config->tls_ca_file, 0, sizeof config->tls_ca_file) ||
        !memchr(config->tls_cert_file, 0, sizeof config->tls_cert_file) || !memchr(config->tls_key_file, 0, sizeof config->tls_key_file)) {
        errno = EINVAL;
        return -1;
    }
    cram_remote* rm = map_anon(sizeof(cram_remote));
    if (!rm) return -1;
    rm->config = *config;
    rm->engine = e;
    rm->prefix_len = (uint32_t)strlen((const char*)config->prefix);
    rm->password_len = (uint32_t)strlen((const char*)config->password);
    e->remote = rm; /* remote_destroy undoes a part-built one */
    if ((config->sealed && crypto_load(rm) != 0) || (config->tls && tls_load(rm) != 0)) { int err = errno; remote_destroy(e); errno = err; return -1; }
    if (on_lanes(e)) { /* the faulting threads' lanes: buffers and ciphers made now, never in a signal handler */
        for (uint32_t i = 0; i < config->lanes; i++) {
            remote_lane* l = &rm->lanes[i];
            for (uint32_t k = 0; k < CRAM_REMOTE_MAX_ENDPOINTS; k++) l->link[k].fd = -1;
            rm->lane_count = i + 1;
            unsigned char* buffers = map_anon(REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE);
            int failed = 0;
            if (!buffers || madvise(buffers, REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE, MADV_POPULATE_WRITE) != 0 ||
                (l->cipher = cipher_new(rm, &failed), failed)) {
                int err = buffers ? (failed ? ENOMEM : errno) : errno;
                if (buffers) munmap(buffers, REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE);
                remote_destroy(e);
                errno = err;
                return -1;
            }
            l->reply = buffers; /* the mapping's base (remote_destroy unmaps it) */
            l->page = buffers + REMOTE_REPLY_MAX;
            l->plain = buffers + REMOTE_REPLY_MAX + CRAM_PAGE_SIZE;
        }
    }
    return 0;
}

/* A node's connection and reader (service-thread engines, and every engine with TLS), made with its first endpoint. */
static int node_start(cram_engine* e, uint32_t index)
{
    cram_remote* rm = e->remote;
    remote_node* n = map_anon(sizeof(remote_node));
    if (!n) return -1;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->work, NULL);
    n->link.fd = -1;
    n->wake = -1;
    n->engine = e;
    n->index = index;
    int failed = 0;
    n->buf = map_anon(NODE_BUFFERS);
    n->cipher = cipher_new(rm, &failed);
    if (!n->buf || failed || (rm->config.tls && (n->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) || (errno = pthread_create(&n->reader, NULL, node_reader_main, n)) != 0) {
        int err = failed ? ENOMEM : errno;
        node_free(rm, n);
        errno = err;
        return -1;
    }
    n->started = 1;
    pthread_setname_np(n->reader, "cram-remote");
    __atomic_store_n(&rm->nodes[index], n, __ATOMIC_RELEASE);
    return 0;
}

EXPORT int CramNative_RemoteSetEndpoint(cram_engine* e, uint32_t index, uint32_t address, uint32_t port)
{
    if (!e || !e->remote || index >= CRAM_REMOTE_MAX_ENDPOINTS || port == 0 || port > 65535) { errno = EINVAL; return -1; }
    cram_remote* rm = e->remote;
    __atomic_store_n(&rm->endpoints[index], ((uint64_t)address << 16) | port, __ATOMIC_RELEASE);
    if (!on_lanes(e) && !__atomic_load_n(&rm->nodes[index], __ATOMIC_ACQUIRE)) return node_start(e, index);
    if (rm->nodes[index]) { /* a failover: the reader reconnects now rather than at its next timeout */
        remote_node* n = rm->nodes[index];
        pthread_mutex_lock(&n->lock);
        if (n->link.fd >= 0) { shutdown(n->link.fd, SHUT_RDWR); n->broken = 1; }
        pthread_cond_signal(&n->work);
        pthread_mutex_unlock(&n->lock);
    }
    return 0;
}

EXPORT int CramNative_RemoteStats(cram_engine* e, cram_remote_stats* stats)
{
    if (!e || !stats) { errno = EINVAL; return -1; }
    if (!e->remote) { memset(stats, 0, sizeof *stats); return 0; }
    cram_remote_stats* st = &e->remote->stats;
    uint64_t* from = (uint64_t*)(void*)st;
    uint64_t* to = (uint64_t*)(void*)stats;
    for (size_t i = 0; i < sizeof *st / sizeof(uint64_t); i++) to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
    return 0;
}

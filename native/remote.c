/*
 * The remote tier's read half ("Remote tier" in cramnative.h): a fault on a REMOTE slot claims its
 * page (EVICTED -> FETCHING) under the engine lock; the extent is fetched outside it - by the
 * cram-remote fetcher threads for the service thread, which goes on serving other faults, or by
 * the faulting thread itself in the SIGBUS service - with one RESP GETRANGE over a pooled
 * connection, opened (AES-256-GCM, libcrypto), checked (CRC-32C), decoded (LZ4), mapped with one
 * UFFDIO_COPY and published. Nothing here waits for managed code or takes the engine lock, and
 * everything the faulting thread runs is a system call or plain code on memory allocated at
 * configure time (it runs in a signal handler): no malloc, no stdio, no locale.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#define REMOTE_QUEUE 4096     /* fetches queued for the fetchers (one per faulting thread at most, in practice) */
#define REMOTE_LANES 16       /* fetches that run at once: each has its connections, cipher and buffers */
#define REMOTE_FETCHERS_MAX 8
#define REMOTE_REPLY_MAX (CRAM_PAGE_SIZE + CRAM_REMOTE_TAG_BYTES + 64)
#define REMOTE_IO_SLICE_MS 250 /* a socket operation's own timeout; the fetch's retries run to config.timeout_ms */

typedef struct remote_request {
    cram_region_desc* region;
    uint64_t page;   /* in region */
    uint64_t old;    /* the page's EVICTED word (restored if the fetch fails) */
    uint64_t next;   /* the word it gets once mapped: CLEAN(slot) or DIRTY, with working-set bits */
    uint64_t slot_id, location, t0;
    uint32_t length, checksum, flags, write;
} remote_request;

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

typedef struct remote_lane {
    uint32_t busy;
    int fd[CRAM_REMOTE_MAX_ENDPOINTS];       /* -1: not connected */
    uint64_t peer[CRAM_REMOTE_MAX_ENDPOINTS]; /* the endpoint word fd is connected to */
    void* cipher;                            /* keyed once at configure; only the IV changes per entry */
    unsigned char* reply;                    /* REMOTE_REPLY_MAX */
    unsigned char* plain;                    /* CRAM_PAGE_SIZE: the opened (stored) bytes */
    unsigned char* page;                     /* CRAM_PAGE_SIZE: the decoded page */
} remote_lane;

typedef struct cram_remote {
    cram_remote_config config;
    uint32_t prefix_len, password_len;
    uint64_t endpoints[CRAM_REMOTE_MAX_ENDPOINTS]; /* address << 16 | port, 0: unknown (atomic) */
    remote_lane lanes[REMOTE_LANES];
    crypto_api crypto;
    void* libcrypto;
    pthread_mutex_t queue_lock; /* a leaf: taken under the engine lock by claims, alone by fetchers */
    pthread_cond_t queue_cond;
    remote_request queue[REMOTE_QUEUE];
    uint32_t queue_head, queue_count, stop;
    pthread_t fetchers[REMOTE_FETCHERS_MAX];
    uint32_t fetcher_count;
    uint32_t inflight[CRAM_MAX_REGIONS]; /* claimed fetches per region, not yet published */
    cram_remote_stats stats;
} cram_remote;

/* The fetch the faulting thread claimed in its SIGBUS handler, run once it lets the lock go. */
static __thread remote_request t_pending __attribute__((tls_model("initial-exec")));
static __thread int t_pending_set __attribute__((tls_model("initial-exec")));

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

static int send_all(int fd, const char* p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one reply into buf (cap bytes): a simple line (+OK, -ERR ...) or a bulk string. Returns the
 * bulk's length (its bytes at buf + *body), -2 for nil, -3 for an error or simple reply other than
 * +OK (-4), -1 for a socket error or a reply that does not fit. */
static int64_t read_reply(int fd, unsigned char* buf, size_t cap, size_t* body)
{
    size_t have = 0, line = 0;
    for (;;) { /* the first line */
        for (; line + 1 < have; line++)
            if (buf[line] == '\r' && buf[line + 1] == '\n') goto parsed;
        if (have == cap) return -1;
        ssize_t n = recv(fd, buf + have, cap - have, 0);
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
        ssize_t n = recv(fd, buf + have, total - have, 0);
        if (n <= 0) { if (n < 0 && errno == EINTR) continue; return -1; }
        have += (size_t)n;
    }
    *body = start;
    return (int64_t)length;
}

static void lane_close(remote_lane* l, uint32_t node)
{
    if (l->fd[node] >= 0) close(l->fd[node]);
    l->fd[node] = -1;
}

/* Connects lane l to node's current endpoint (and AUTHs); 0, or -1. */
static int lane_connect(cram_remote* rm, remote_lane* l, uint32_t node, uint64_t endpoint)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    struct timeval tv = { .tv_sec = 0, .tv_usec = REMOTE_IO_SLICE_MS * 1000 };
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* connect(2) too */
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(endpoint & 0xFFFF)),
                              .sin_addr = { .s_addr = (uint32_t)(endpoint >> 16) } };
    if (connect(fd, (struct sockaddr*)&sa, sizeof sa) != 0) { close(fd); return -1; }
    add_counter(&rm->stats.connects, 1);
    if (rm->password_len) {
        char request[160], *p = request;
        p = put_bytes(p, "*2\r\n", 4);
        p = put_bulk(p, "AUTH", 4);
        p = put_bulk(p, rm->config.password, rm->password_len);
        size_t body;
        if (send_all(fd, request, (size_t)(p - request)) != 0 || read_reply(fd, l->reply, REMOTE_REPLY_MAX, &body) != -4) {
            close(fd);
            return -1;
        }
    }
    l->fd[node] = fd;
    l->peer[node] = endpoint;
    return 0;
}

static char hex_digit(uint32_t v) { return (char)(v < 10 ? '0' + v : 'a' + v - 10); }

/* The segment's key: "<prefix>:<segment in hex>" (ISegmentKeys in managed code builds the same). */
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

/* One GETRANGE of the request's extent (+ tag). 0 with the bytes at *out, or -1 (to be retried). */
static int fetch_once(cram_remote* rm, remote_lane* l, const remote_request* q, const unsigned char** out)
{
    uint32_t node = CRAM_REMOTE_NODE(q->location);
    uint64_t endpoint = __atomic_load_n(&rm->endpoints[node], __ATOMIC_ACQUIRE);
    if (!endpoint) return -1;
    if (l->fd[node] >= 0 && l->peer[node] != endpoint) lane_close(l, node); /* failed over meanwhile */
    if (l->fd[node] < 0 && lane_connect(rm, l, node, endpoint) != 0) return -1;
    uint32_t extent = q->length + (rm->config.sealed ? CRAM_REMOTE_TAG_BYTES : 0);
    uint64_t start = CRAM_REMOTE_OFFSET(q->location);
    char key[96], request[256], *p = request;
    size_t key_len = segment_key(rm, CRAM_REMOTE_SEGMENT(q->location), key);
    p = put_bytes(p, "*4\r\n", 4);
    p = put_bulk(p, "GETRANGE", 8);
    p = put_bulk(p, key, key_len);
    p = put_bulk_u64(p, start);
    p = put_bulk_u64(p, start + extent - 1);
    uint64_t t0 = now_ns();
    size_t body;
    int64_t n;
    if (send_all(l->fd[node], request, (size_t)(p - request)) != 0 ||
        (n = read_reply(l->fd[node], l->reply, REMOTE_REPLY_MAX, &body)) == -1) {
        lane_close(l, node); /* the stream's state is unknown: a new connection */
        return -1;
    }
    if (n != (int64_t)extent) return -1; /* nil (no such key yet: a failover), an error reply, a short value */
    add_counter(&rm->stats.fetch_ns, now_ns() - t0);
    add_counter(&rm->stats.fetch_bytes, (uint64_t)n);
    *out = l->reply + body;
    return 0;
}

/* ------------------------------------------------------------------ open, check, decode */

/* The stored bytes of q from its extent: AES-GCM opened into l->plain (sealed), else as they are. */
static const unsigned char* open_extent(cram_remote* rm, remote_lane* l, const remote_request* q, const unsigned char* extent)
{
    if (!rm->config.sealed) return extent;
    uint64_t t0 = now_ns();
    unsigned char iv[12];
    uint64_t segment = CRAM_REMOTE_SEGMENT(q->location);
    uint32_t offset = CRAM_REMOTE_OFFSET(q->location);
    memcpy(iv, &segment, 8); /* little-endian, as managed code builds it */
    memcpy(iv + 8, &offset, 4);
    int n = 0, m = 0;
    const crypto_api* c = &rm->crypto;
    int ok = c->decrypt_init(l->cipher, NULL, NULL, NULL, iv) == 1 &&
             c->decrypt_update(l->cipher, l->plain, &n, extent, (int)q->length) == 1 && n == (int)q->length &&
             c->ctx_ctrl(l->cipher, EVP_CTRL_GCM_SET_TAG, CRAM_REMOTE_TAG_BYTES, (void*)(extent + q->length)) == 1 &&
             c->decrypt_final(l->cipher, l->plain + n, &m) == 1;
    add_counter(&rm->stats.open_ns, now_ns() - t0);
    if (!ok) {
        add_counter(&rm->stats.auth_failures, 1);
        return NULL;
    }
    return l->plain;
}

/* The page of q into l->page: 0, or -1 (checksum or LZ4 failed: the stored copy is bad). */
static int decode(cram_remote* rm, remote_lane* l, const remote_request* q, const unsigned char* stored, uint64_t** counter, cram_shared* s)
{
    uint64_t t0 = now_ns();
    int ok = crc32c(stored, q->length) == q->checksum;
    if (!ok) add_counter(&s->stats.checksum_failures, 1);
    else if (q->flags & CRAM_SLOT_RAW) {
        memcpy(l->page, stored, CRAM_PAGE_SIZE);
        *counter = &s->stats.faults_swapin_raw;
    } else {
        ok = LZ4_decompress_safe((const char*)stored, (char*)l->page, (int)q->length, CRAM_PAGE_SIZE) == (int)CRAM_PAGE_SIZE;
        *counter = &s->stats.faults_swapin_lz4;
        if (!ok) add_counter(&s->stats.service_errors, 1);
    }
    add_counter(&rm->stats.decode_ns, now_ns() - t0);
    return ok ? 0 : -1;
}

static remote_lane* lane_take(cram_remote* rm)
{
    for (uint32_t spins = 0;; spins++) {
        for (uint32_t i = 0; i < REMOTE_LANES; i++) {
            uint32_t expected = 0;
            if (!__atomic_load_n(&rm->lanes[i].busy, __ATOMIC_RELAXED) &&
                __atomic_compare_exchange_n(&rm->lanes[i].busy, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return &rm->lanes[i];
        }
        if (spins < 16) sched_yield(); else sleep_ns(50000);
    }
}

static void lane_release(remote_lane* l) { __atomic_store_n(&l->busy, 0, __ATOMIC_RELEASE); }

/* Maps the page and publishes it (FETCHING -> CLEAN or DIRTY), or on failure marks the slot bad and
 * puts the page back to EVICTED (the retried access faults again and gets SIGBUS, as for any copy
 * that cannot be read). Either way whoever waits is woken and the region's fetch count drops. */
static void publish(cram_engine* e, const remote_request* q, const unsigned char* page, uint64_t* counter)
{
    cram_shared* s = e->shared;
    cram_remote* rm = e->remote;
    cram_region_desc* r = q->region;
    uint64_t* pte = &r->pte[q->page];
    uint64_t addr = r->base + (q->page << CRAM_PAGE_SHIFT);
    cram_slot* slot = slot_get(s, q->slot_id);
    if (page && uffd_copy(e->uffd, addr, page, CRAM_PAGE_SIZE, !q->write) != 0 && errno != EEXIST) {
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
        if (!q->write) {
            clean_copy_count(s, q->slot_id, +1);
            slot_flags_or(slot, CRAM_SLOT_REFERENCED);
        }
        add_counter(counter, 1);
        add_counter(&r->faults_swapin, 1);
        add_counter(&rm->stats.fetches, 1);
        uint64_t us = (now_ns() - q->t0) / 1000;
        uint32_t b = us ? 64 - (uint32_t)__builtin_clzll(us) : 0;
        if (b >= CRAM_SWAPIN_LATENCY_BUCKETS) b = CRAM_SWAPIN_LATENCY_BUCKETS - 1;
        add_counter(&s->stats.swapin_latency_us_log2[b], 1);
        pte_store(pte, q->next);
        if (q->write) stale_push(s, q->slot_id);
    } else {
        pte_store(pte, q->old);
    }
    engine_wake(e, addr, CRAM_PAGE_SIZE);
    futex_wake_word(pte);
    __atomic_fetch_sub(&rm->inflight[r->id], 1, __ATOMIC_RELEASE);
    __atomic_fetch_sub(&rm->stats.inflight, 1, __ATOMIC_RELAXED);
}

/* Runs one claimed fetch to its end (published or failed). */
static void fetch_run(cram_engine* e, const remote_request* q)
{
    cram_remote* rm = e->remote;
    remote_lane* l = lane_take(rm);
    uint64_t deadline = now_ns() + (uint64_t)rm->config.timeout_ms * 1000000ull, backoff = 200000;
    const unsigned char* extent = NULL;
    while (fetch_once(rm, l, q, &extent) != 0) {
        if (now_ns() >= deadline) { extent = NULL; break; }
        add_counter(&rm->stats.fetch_retries, 1);
        sleep_ns(backoff); /* the store restarting, a failover: back off, up to 50 ms between tries */
        if (backoff < 50000000) backoff *= 2;
    }
    const unsigned char* stored = extent ? open_extent(rm, l, q, extent) : NULL;
    uint64_t* counter = NULL;
    int ok = stored && decode(rm, l, q, stored, &counter, e->shared) == 0;
    publish(e, q, ok ? l->page : NULL, counter);
    lane_release(l);
}

static void* fetcher_main(void* arg)
{
    cram_engine* e = arg;
    cram_remote* rm = e->remote;
    for (;;) {
        pthread_mutex_lock(&rm->queue_lock);
        while (!rm->queue_count && !rm->stop) pthread_cond_wait(&rm->queue_cond, &rm->queue_lock);
        if (!rm->queue_count) { pthread_mutex_unlock(&rm->queue_lock); break; }
        remote_request q = rm->queue[rm->queue_head];
        rm->queue_head = (rm->queue_head + 1) % REMOTE_QUEUE;
        rm->queue_count--;
        pthread_mutex_unlock(&rm->queue_lock);
        fetch_run(e, &q);
    }
    return NULL;
}

/* ------------------------------------------------------------------ the fault path's side */

void remote_claim(cram_engine* e, cram_region_desc* r, uint64_t page, uint64_t p, int write, uint64_t t0)
{
    ASSERT_ENGINE_LOCKED(e);
    cram_shared* s = e->shared;
    cram_remote* rm = e->remote;
    uint64_t id = CRAM_PTE_SLOT(p);
    cram_slot* slot = slot_get(s, id);
    uint64_t next = write ? CRAM_PTE_MAKE(CRAM_PTE_DIRTY, 0) | CRAM_PTE_REFERENCED : CRAM_PTE_MAKE(CRAM_PTE_CLEAN, id);
    uint64_t threshold = __atomic_load_n(&s->activate_distance_pages, __ATOMIC_RELAXED);
    if (threshold && (p & CRAM_PTE_STAMPED)) { /* the working set, as resolve_swapin decides it */
        uint64_t now = __atomic_load_n(&s->stats.evicted_pages_total, __ATOMIC_RELAXED) / CRAM_EVICTION_STAMP_UNIT;
        if ((((now - CRAM_PTE_STAMP(p)) & 0xFFFFull) + 1) * CRAM_EVICTION_STAMP_UNIT <= threshold) {
            next |= CRAM_PTE_ACTIVE;
            add_counter(&s->stats.workingset_activations, 1);
        } else if (!write) next |= CRAM_PTE_TRIAL;
    } else if (!write) next |= CRAM_PTE_TRIAL;
    if (!rm) { add_counter(&s->stats.service_errors, 1); return; } /* never configured: nothing can name REMOTE */
    remote_request q = {
        .region = r, .page = page, .old = p, .next = next, .slot_id = id, .location = slot->location, .t0 = t0,
        .length = slot->length, .checksum = slot->checksum, .flags = slot_flags(slot), .write = (uint32_t)write,
    };
    if (!pte_cas(&r->pte[page], p, CRAM_PTE_MAKE(CRAM_PTE_FETCHING, id))) { add_counter(&s->stats.service_errors, 1); return; }
    fault_log_append(s, r->id, page);
    __atomic_fetch_add(&rm->inflight[r->id], 1, __ATOMIC_ACQ_REL);
    __atomic_fetch_add(&rm->stats.inflight, 1, __ATOMIC_RELAXED);
    if (e->faulting_thread) { /* this thread fetches, once it lets the lock go (remote_run_pending) */
        t_pending = q;
        t_pending_set = 1;
        return;
    }
    for (;;) { /* the fetchers never take the engine lock: a full queue drains without it */
        pthread_mutex_lock(&rm->queue_lock);
        if (rm->queue_count < REMOTE_QUEUE) {
            rm->queue[(rm->queue_head + rm->queue_count) % REMOTE_QUEUE] = q;
            if (++rm->queue_count > rm->stats.queued_peak) rm->stats.queued_peak = rm->queue_count;
            pthread_cond_signal(&rm->queue_cond);
            pthread_mutex_unlock(&rm->queue_lock);
            return;
        }
        pthread_mutex_unlock(&rm->queue_lock);
        sleep_ns(50000);
    }
}

void remote_run_pending(cram_engine* e)
{
    if (!t_pending_set) return;
    t_pending_set = 0;
    remote_request q = t_pending;
    fetch_run(e, &q);
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

void remote_destroy(cram_engine* e)
{
    cram_remote* rm = e->remote;
    if (!rm) return;
    pthread_mutex_lock(&rm->queue_lock);
    rm->stop = 1;
    pthread_cond_broadcast(&rm->queue_cond);
    pthread_mutex_unlock(&rm->queue_lock);
    for (uint32_t i = 0; i < rm->fetcher_count; i++) pthread_join(rm->fetchers[i], NULL);
    for (uint32_t i = 0; i < REMOTE_LANES; i++) {
        remote_lane* l = &rm->lanes[i];
        for (uint32_t n = 0; n < CRAM_REMOTE_MAX_ENDPOINTS; n++) lane_close(l, n);
        if (l->cipher) rm->crypto.ctx_free(l->cipher);
        if (l->reply) munmap(l->reply, REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE);
    }
    if (rm->libcrypto) dlclose(rm->libcrypto);
    pthread_cond_destroy(&rm->queue_cond);
    pthread_mutex_destroy(&rm->queue_lock);
    explicit_bzero(rm->config.key, sizeof rm->config.key);
    munmap(rm, sizeof *rm);
    e->remote = NULL;
}

EXPORT int CramNative_RemoteConfigure(cram_engine* e, const cram_remote_config* config)
{
    if (!e || !config || e->remote || config->timeout_ms == 0 || config->fetchers == 0 || config->fetchers > REMOTE_FETCHERS_MAX ||
        config->sealed > 1 || !memchr(config->prefix, 0, sizeof config->prefix) || !memchr(config->password, 0, sizeof config->password) ||
        !config->prefix[0]) {
        errno = EINVAL;
        return -1;
    }
    cram_remote* rm = map_anon(sizeof(cram_remote));
    if (!rm) return -1;
    rm->config = *config;
    rm->prefix_len = (uint32_t)strlen((const char*)config->prefix);
    rm->password_len = (uint32_t)strlen((const char*)config->password);
    pthread_mutex_init(&rm->queue_lock, NULL);
    pthread_cond_init(&rm->queue_cond, NULL);
    e->remote = rm; /* remote_destroy undoes a part-built one */
    if (config->sealed && crypto_load(rm) != 0) { int err = errno; remote_destroy(e); errno = err; return -1; }
    for (uint32_t i = 0; i < REMOTE_LANES; i++) {
        remote_lane* l = &rm->lanes[i];
        for (uint32_t n = 0; n < CRAM_REMOTE_MAX_ENDPOINTS; n++) l->fd[n] = -1;
        unsigned char* buffers = map_anon(REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE);
        if (!buffers || madvise(buffers, REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE, MADV_POPULATE_WRITE) != 0) {
            int err = errno;
            if (buffers) munmap(buffers, REMOTE_REPLY_MAX + 2 * CRAM_PAGE_SIZE);
            remote_destroy(e);
            errno = err;
            return -1;
        }
        l->reply = buffers; /* the mapping's base (remote_destroy unmaps it) */
        l->page = buffers + REMOTE_REPLY_MAX;
        l->plain = buffers + REMOTE_REPLY_MAX + CRAM_PAGE_SIZE;
        if (config->sealed) {
            if (!(l->cipher = rm->crypto.ctx_new()) ||
                rm->crypto.decrypt_init(l->cipher, rm->crypto.aes_256_gcm(), NULL, rm->config.key, NULL) != 1) {
                remote_destroy(e);
                errno = ENOMEM;
                return -1;
            }
        }
    }
    if (!e->faulting_thread) {
        for (uint32_t i = 0; i < config->fetchers; i++) {
            if (pthread_create(&rm->fetchers[i], NULL, fetcher_main, e) != 0) {
                int err = errno;
                remote_destroy(e);
                errno = err ? err : EAGAIN;
                return -1;
            }
            pthread_setname_np(rm->fetchers[i], "cram-remote");
            rm->fetcher_count = i + 1;
        }
    }
    return 0;
}

EXPORT int CramNative_RemoteSetEndpoint(cram_engine* e, uint32_t index, uint32_t address, uint32_t port)
{
    if (!e || !e->remote || index >= CRAM_REMOTE_MAX_ENDPOINTS || port == 0 || port > 65535) { errno = EINVAL; return -1; }
    __atomic_store_n(&e->remote->endpoints[index], ((uint64_t)address << 16) | port, __ATOMIC_RELEASE);
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

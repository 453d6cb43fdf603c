/* fault-floor: what this host charges for the primitives a user-space fault service is built from,
 * measured in one run, so design choices (where the service runs, how drops and protections are
 * batched) rest on numbers rather than on another machine's folklore.
 *
 *   gcc -O2 -Wall -Wextra -o /tmp/fault-floor bench/native/fault-floor.c -lpthread && /tmp/fault-floor
 *
 * Needs a full userfaultfd (root, or vm.unprivileged_userfaultfd=1). Prints one line per figure:
 *   1. a random fault on a never-touched page: the kernel's own first touch, and userfaultfd
 *      answered (UFFDIO_COPY of a page) by a service thread spinning / blocking, by a service
 *      process (another mm, the uffd inherited), and by the faulting thread itself (SIGBUS mode);
 *   2. UFFDIO_COPY of a random page and the first read after it, alone and while another thread
 *      of the process runs on another CPU;
 *   3. dropping scattered pages (one madvise each, against one process_madvise for the batch) and
 *      write-protecting scattered pages, while another thread runs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ul
#define REGION (1ul << 30)
#define SAMPLES 20000

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void* a, const void* b)
{
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

static char page_src[PAGE];
static int uffd;

static char* uffd_region(int nonblock, unsigned long features, unsigned long mode)
{
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0) { perror("userfaultfd"); exit(2); }
    char* r = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct uffdio_register reg = { .range = { (unsigned long)r, REGION }, .mode = mode };
    if (r == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) { perror("register"); exit(2); }
    return r;
}

static void release_region(char* r)
{
    munmap(r, REGION);
    close(uffd);
}

/* Random first reads of `r`, SAMPLES of them, each after a page of unrelated work; prints p50/p90. */
static void random_faults(const char* what, char* r)
{
    static char work[PAGE];
    double* lat = malloc(SAMPLES * sizeof *lat);
    srand(3);
    for (int k = 0; k < SAMPLES; k++) {
        size_t p = (size_t)rand() % (REGION / PAGE);
        memset(work, k, PAGE);
        double t0 = now_ns();
        (void)*(volatile char*)(r + p * PAGE);
        lat[k] = now_ns() - t0;
    }
    qsort(lat, SAMPLES, sizeof *lat, cmp);
    printf("%-52s p50 %6.1f us  p90 %6.1f us\n", what, lat[SAMPLES / 2] / 1e3, lat[SAMPLES * 9 / 10] / 1e3);
    free(lat);
}

static int spin;
static void serve(void)
{
    struct uffd_msg m;
    for (;;) {
        ssize_t n = read(uffd, &m, sizeof m);
        if (n < 0 && errno == EAGAIN) {
            if (spin) { __builtin_ia32_pause(); continue; }
            struct pollfd p = { uffd, POLLIN, 0 };
            poll(&p, 1, -1);
            continue;
        }
        if (n != sizeof m) return;
        struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(PAGE - 1), .src = (unsigned long)page_src, .len = PAGE };
        ioctl(uffd, UFFDIO_COPY, &c);
    }
}
static void* serve_thread(void* arg) { (void)arg; serve(); return NULL; }

static void on_sigbus(int sig, siginfo_t* si, void* ctx)
{
    (void)sig; (void)ctx;
    struct uffdio_copy c = { .dst = (unsigned long)si->si_addr & ~(PAGE - 1), .src = (unsigned long)page_src, .len = PAGE };
    ioctl(uffd, UFFDIO_COPY, &c);
}

static volatile int stop_busy;
static char* busy_target;
static void* busy(void* arg) { (void)arg; long s = 0; while (!stop_busy) s += busy_target[0]; return (void*)s; }

static void with_busy_thread(int on, pthread_t* t, char* target)
{
    if (on) { stop_busy = 0; busy_target = target; pthread_create(t, NULL, busy, NULL); }
    else { stop_busy = 1; pthread_join(*t, NULL); }
}

/* UFFDIO_COPY of a random page (page tables present) and the first read after it. */
static void copy_and_read(const char* what, int busy_on)
{
    char* r = uffd_region(0, 0, UFFDIO_REGISTER_MODE_MISSING);
    for (size_t i = 0; i < REGION / PAGE; i += 512) { /* page tables first */
        struct uffdio_copy c = { .dst = (unsigned long)r + i * PAGE, .src = (unsigned long)page_src, .len = PAGE };
        ioctl(uffd, UFFDIO_COPY, &c);
    }
    pthread_t t;
    if (busy_on) with_busy_thread(1, &t, r);
    double copy = 0, read = 0;
    const int k = 4000;
    srand(5);
    for (int i = 0; i < k; i++) {
        size_t p = (size_t)(rand() % (int)(REGION / PAGE / 512)) * 512 + 1 + (size_t)(rand() % 500);
        double t0 = now_ns();
        struct uffdio_copy c = { .dst = (unsigned long)r + p * PAGE, .src = (unsigned long)page_src, .len = PAGE };
        ioctl(uffd, UFFDIO_COPY, &c);
        double t1 = now_ns();
        (void)*(volatile char*)(r + p * PAGE + 8);
        read += now_ns() - t1;
        copy += t1 - t0;
    }
    if (busy_on) with_busy_thread(0, &t, NULL);
    printf("%-52s copy %5.2f us  first read %5.2f us\n", what, copy / k / 1e3, read / k / 1e3);
    release_region(r);
}

/* Scattered pages (every other one of 512): drop one madvise each vs one process_madvise; WP each. */
static void scattered(void)
{
    const size_t n = 256, rounds = 20;
    char* r = uffd_region(0, UFFD_FEATURE_PAGEFAULT_FLAG_WP, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
    struct uffdio_copy fill = { .dst = (unsigned long)r, .src = 0, .len = 2 * n * PAGE };
    char* zeros = calloc(2 * n, PAGE);
    fill.src = (unsigned long)zeros;
    ioctl(uffd, UFFDIO_COPY, &fill);
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    struct iovec iov[256];
    for (size_t i = 0; i < n; i++) iov[i] = (struct iovec){ r + (2 * i + 1) * PAGE, PAGE };
    pthread_t t;
    with_busy_thread(1, &t, r);
    double each = 0, batch = 0, wp = 0;
    for (size_t k = 0; k < rounds; k++) {
        double t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            struct uffdio_writeprotect w = { .range = { (unsigned long)iov[i].iov_base, PAGE }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
            ioctl(uffd, UFFDIO_WRITEPROTECT, &w);
        }
        wp += now_ns() - t0;
        t0 = now_ns();
        for (size_t i = 0; i < n; i++) madvise(iov[i].iov_base, PAGE, MADV_DONTNEED);
        each += now_ns() - t0;
        ioctl(uffd, UFFDIO_COPY, &fill); /* EEXIST for the present ones; refills the dropped */
        fill.copy = 0;
        for (size_t i = 0; i < n; i++) {
            struct uffdio_copy c = { .dst = (unsigned long)iov[i].iov_base, .src = (unsigned long)zeros, .len = PAGE };
            ioctl(uffd, UFFDIO_COPY, &c);
        }
        t0 = now_ns();
        long rc = pidfd < 0 ? -1 : syscall(SYS_process_madvise, pidfd, iov, n, MADV_DONTNEED, 0u);
        batch += now_ns() - t0;
        if (rc < 0) { batch = -1; break; }
        for (size_t i = 0; i < n; i++) {
            struct uffdio_copy c = { .dst = (unsigned long)iov[i].iov_base, .src = (unsigned long)zeros, .len = PAGE };
            ioctl(uffd, UFFDIO_COPY, &c);
        }
    }
    with_busy_thread(0, &t, NULL);
    printf("%-52s %5.2f us/page\n", "write-protect one scattered page (other thread runs)", wp / n / rounds / 1e3);
    printf("%-52s %5.2f us/page\n", "drop, one madvise per page (other thread runs)", each / n / rounds / 1e3);
    if (batch >= 0) printf("%-52s %5.2f us/page\n", "drop, one process_madvise per batch (same)", batch / n / rounds / 1e3);
    else printf("%-52s not available on this kernel\n", "drop, one process_madvise per batch");
    free(zeros);
    release_region(r);
}

int main(void)
{
    memset(page_src, 7, PAGE);
    char* plain = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    random_faults("kernel first touch (plain anonymous memory)", plain);
    munmap(plain, REGION);

    for (int s = 1; s >= 0; s--) {
        spin = s;
        char* r = uffd_region(1, 0, UFFDIO_REGISTER_MODE_MISSING);
        pthread_t t;
        pthread_create(&t, NULL, serve_thread, NULL);
        random_faults(s ? "userfaultfd, service thread spinning" : "userfaultfd, service thread blocking", r);
        pthread_cancel(t);
        pthread_join(t, NULL);
        release_region(r);

        r = uffd_region(1, 0, UFFDIO_REGISTER_MODE_MISSING);
        pid_t child = fork();
        if (child == 0) { serve(); _exit(0); }
        random_faults(s ? "userfaultfd, service process spinning" : "userfaultfd, service process blocking", r);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        release_region(r);
    }

    char* r = uffd_region(1, UFFD_FEATURE_SIGBUS, UFFDIO_REGISTER_MODE_MISSING);
    struct sigaction sa = { 0 };
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    random_faults("userfaultfd, faulting thread itself (SIGBUS mode)", r);
    release_region(r);

    copy_and_read("UFFDIO_COPY a random page, alone", 0);
    copy_and_read("UFFDIO_COPY a random page, other thread runs", 1);
    scattered();
    return 0;
}

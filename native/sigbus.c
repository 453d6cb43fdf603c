/*
 * The faulting-thread fault service: one SIGBUS handler for the process, in front of the .NET
 * runtime's, resolving userfaults on the thread that took them ("Fault services" in cramnative.h).
 */
#define _GNU_SOURCE
#include "internal.h"
#include <signal.h>
#include <ucontext.h>

__thread int t_engine_locked __attribute__((tls_model("initial-exec")));
__thread int t_fault_failed __attribute__((tls_model("initial-exec")));

/* Engines in faulting-thread mode. Written under registry_lock; read by the handler without a lock
 * (a slot holds an engine or NULL; registry_high only grows). */
#define SIGBUS_MAX_ENGINES 4096
static cram_engine* registry[SIGBUS_MAX_ENGINES];
static uint32_t registry_high;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t sigbus_inflight;      /* handlers between their registry lookup and the end of their use of the engine */
static struct sigaction previous;     /* the handler before ours: every SIGBUS that is not ours goes there */
static int installed;
static __thread int t_in_handler __attribute__((tls_model("initial-exec")));

/* CramNative_MeasureFloor's probe: a bare userfaultfd region whose faults the handler answers with
 * one UFFDIO_COPY of a fixed page, so the floor is measured through this very handler. */
static struct { uint64_t base, length; const void* source; int uffd; } probe;

/* The x86-64 page-fault error code's write bit, which the kernel reports with a fault's SIGBUS. */
#define X86_PF_WRITE 2

/* Passes a SIGBUS on to the handler installed before ours, as if ours were not there. */
static void chain(int sig, siginfo_t* info, void* context)
{
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(sig, info, context);
        return;
    }
    if (previous.sa_handler == SIG_IGN) return;
    if (previous.sa_handler == SIG_DFL) {
        /* The default action (terminate with a core): restore it and let the access fault again. */
        signal(sig, SIG_DFL);
        return;
    }
    previous.sa_handler(sig);
}

static void on_sigbus(int sig, siginfo_t* info, void* context)
{
    int saved_errno = errno;
    int handled = 0;
    /* The handler touches no region memory, so a fault inside it is a bug: passed on (CRAM_DEBUG aborts). */
    CRAM_CHECK(!t_in_handler, "the SIGBUS handler re-entered (address, code)", (uint64_t)(uintptr_t)info->si_addr, (uint64_t)info->si_code);
    /* A userfault's SIGBUS is BUS_ADRERR with the faulting address; a poisoned page's is
     * BUS_MCEERR_AR, and a tgkill'ed one SI_TKILL: those are never ours to resolve. */
    if (info->si_code == BUS_ADRERR && !t_in_handler) {
        uint64_t addr = (uint64_t)(uintptr_t)info->si_addr;
        uint64_t probe_length = __atomic_load_n(&probe.length, __ATOMIC_ACQUIRE);
        if (probe_length && addr - probe.base < probe_length) {
            struct uffdio_copy c = { .dst = addr & ~(uint64_t)(CRAM_PAGE_SIZE - 1), .src = (uint64_t)(uintptr_t)probe.source, .len = CRAM_PAGE_SIZE };
            (void)ioctl(probe.uffd, UFFDIO_COPY, &c);
            errno = saved_errno;
            return;
        }
        const ucontext_t* uc = context;
        int is_write = (uc->uc_mcontext.gregs[REG_ERR] & X86_PF_WRITE) != 0;
        t_in_handler = 1;
        t_fault_failed = 0; /* only what this fault's resolution sets counts */
        __atomic_add_fetch(&sigbus_inflight, 1, __ATOMIC_SEQ_CST);
        uint32_t high = __atomic_load_n(&registry_high, __ATOMIC_ACQUIRE);
        for (uint32_t i = 0; i < high && !handled; i++) {
            cram_engine* e = __atomic_load_n(&registry[i], __ATOMIC_ACQUIRE);
            if (!e) continue;
            if (t_engine_locked) {
                /* Native code touched a region page while holding an engine lock: serving the
                 * fault would deadlock on it. Say so; the access fails as an unserved SIGBUS. */
                static const char msg[] = "cramcore: a fault in a region was taken by a thread holding an engine lock; not served\n";
                ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
                (void)w;
                CRAM_CHECK(0, "a faulting-thread fault under the engine lock (address, 0)", addr, 0);
                break;
            }
            handled = resolve_on_faulting_thread(e, addr, is_write);
        }
        if (t_fault_failed) {
            t_fault_failed = 0;
            handled = 0; /* a bad stored copy: never mapped; the fault goes on to the runtime, which ends the process */
        }
        __atomic_sub_fetch(&sigbus_inflight, 1, __ATOMIC_RELEASE);
        t_in_handler = 0;
    }
    errno = saved_errno;
    if (!handled) chain(sig, info, context);
}

/* Installs the handler once for the life of the process; under registry_lock. */
static int install_locked(void)
{
    if (!installed) {
        struct sigaction act;
        memset(&act, 0, sizeof act);
        act.sa_sigaction = on_sigbus;
        act.sa_flags = SA_SIGINFO | SA_RESTART; /* on the thread's own stack: resolution needs more than an alternate stack */
        sigemptyset(&act.sa_mask);
        if (sigaction(SIGBUS, &act, &previous) != 0) return -1;
        installed = 1; /* for the life of the process: another engine may come, and chaining costs nothing */
    }
    return 0;
}

int sigbus_engine_add(cram_engine* e)
{
    pthread_mutex_lock(&registry_lock);
    if (install_locked() != 0) {
        int err = errno;
        pthread_mutex_unlock(&registry_lock);
        errno = err;
        return -1;
    }
    uint32_t i = 0;
    while (i < SIGBUS_MAX_ENGINES && registry[i]) i++;
    if (i == SIGBUS_MAX_ENGINES) {
        pthread_mutex_unlock(&registry_lock);
        errno = EMFILE;
        return -1;
    }
    __atomic_store_n(&registry[i], e, __ATOMIC_RELEASE);
    if (i >= registry_high) __atomic_store_n(&registry_high, i + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&registry_lock);
    return 0;
}

void sigbus_quiesce(void)
{
    while (__atomic_load_n(&sigbus_inflight, __ATOMIC_ACQUIRE) != 0) sched_yield();
}

void sigbus_engine_remove(cram_engine* e)
{
    pthread_mutex_lock(&registry_lock);
    for (uint32_t i = 0; i < registry_high; i++)
        if (registry[i] == e) __atomic_store_n(&registry[i], NULL, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&registry_lock);
    sigbus_quiesce(); /* a handler that found e before it left has finished with it */
}

int sigbus_probe_start(int uffd, uint64_t base, uint64_t length, const void* source)
{
    pthread_mutex_lock(&registry_lock);
    int rc = install_locked();
    if (rc == 0) {
        probe.uffd = uffd;
        probe.base = base;
        probe.source = source;
        __atomic_store_n(&probe.length, length, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

void sigbus_probe_stop(void)
{
    __atomic_store_n(&probe.length, 0, __ATOMIC_RELEASE);
}

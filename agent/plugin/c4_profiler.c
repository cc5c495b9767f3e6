/*
 * C4 NCCL profiler plugin: per-connection timing for C4D.
 *
 * Subscribes to collective, p2p, proxy-op and proxy-step events and aggregates, per
 * communicator, peer, channel and direction, the bytes, steps, proxy ops and the time
 * each step spent waiting for the GPU, waiting for the peer and on the network. A
 * background thread writes one JSON line per connection per window (and one per
 * completed collective) to <C4_NCCL_PROFILER_DIR>/c4-conn-<host>-<pid>.jsonl; the
 * format is docs/connection-records.md.
 *
 * Hot-path rules: fixed-size pools allocated at init, no malloc, no locks other than
 * short per-pool spinlocks, relaxed atomics for counters. Any failure degrades to "no
 * records" with one line through NCCL's logger; the job is never stopped or blocked.
 *
 * PXN: NCCL copies a proxy op, with the sending process's profiler context and task
 * handle, into another process's shared-memory pool, and that process's proxy thread
 * starts the op and its steps with those foreign pointers. A proxy op whose pid is not
 * ours is therefore never allowed to touch the context or parent it came with: it is
 * aggregated in a process-wide table (communicator unknown, rank and pid of origin), and
 * a step takes its communicator from its parent op event, never from the context.
 *
 * Lifetime: only inits that hand out a context hold a reference; the event-mask pointer
 * NCCL shares between all communicators is written only when a context is handed out;
 * finalize(NULL) does nothing (NCCL >= 2.28 skips it); the flush thread is joined at the
 * last finalize, or at the latest when the library is unloaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nccl_profiler_api.h"

#define C4_CONN_SLOTS 4096 /* connections per communicator (power of two) */
#define C4_POOL_TASK 1024  /* collectives/p2p in flight per communicator */
#define C4_POOL_OP 4096    /* proxy ops in flight per communicator */
#define C4_POOL_STEP 16384 /* proxy steps in flight per communicator */
#define C4_TASK_LOG 4096   /* completed collectives waiting for the flush thread */
#define C4_MAX_COMMS 1024

#define C4_HIDDEN __attribute__((visibility("hidden")))
#define C4_EXPORT __attribute__((visibility("default")))

enum { KIND_TASK = 0x7A5C, KIND_OP = 0x0B0B, KIND_STEP = 0x57E9 };

struct c4Conn { /* one aggregation cell; key 0 means empty */
  uint64_t key;
  int rank, peer, channel, is_send;
  pid_t pid; /* process of the rank (PXN table: the process that created the op) */
  uint64_t ops, steps, bytes, net_ns, peer_wait_ns, gpu_wait_ns; /* atomics */
};

struct c4Comm;

struct c4Event {
  uint32_t kind; /* first field: identifies the handle type */
  uint32_t index;
  struct c4Comm* comm;
  union {
    struct {
      uint64_t seq, start_ns;
      const char* func;
      size_t count;
      int refs, stopped, had_ops, is_p2p, peer;
      uint64_t stop_window; /* window in which the enqueue stop happened */
    } task;
    struct {
      struct c4Conn* conn;
      struct c4Event* parent; /* our task, or NULL (PXN: another process owns it) */
    } op;
    struct {
      struct c4Conn* conn;
      uint64_t t_gpu, t_peer, t_net, t_recv, t_flush;
      size_t bytes;
    } step;
  };
};

struct c4Pool { /* fixed array of events with a spinlocked free stack */
  struct c4Event* slots;
  uint32_t* free_stack;
  uint32_t top, size;
  int lock;
  uint64_t exhausted;
};

struct c4TaskRecord {
  uint64_t seq, start_ns, stop_ns;
  const char* func;
  size_t count;
  int is_p2p, peer, had_ops;
};

struct c4Comm {
  uint64_t comm_hash;
  int rank, nranks;
  int pxn; /* the process-wide table of proxy ops other processes created (PXN) */
  struct c4Conn conns[C4_CONN_SLOTS];
  int conn_lock;
  struct c4Pool tasks, ops, steps;
  int task_lock; /* task refs/stop/complete */
  struct c4TaskRecord log[C4_TASK_LOG];
  uint32_t log_head, log_tail; /* guarded by task_lock */
  uint64_t log_dropped;
};

/* ---- process-wide state ------------------------------------------------- */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
/* Serializes init, finalize and unload (never taken by the flush thread or the hot path), so
 * that none of them interleaves with another while g_lock is released to join the thread. */
static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static struct c4Comm* g_comms[C4_MAX_COMMS];
static struct c4Comm* g_pxn; /* allocated with the first context, freed when the library unloads */
static int g_ncomms, g_refs, g_stop, g_thread_running, g_warned_file, g_warned_pool, g_warned_init;
static pthread_t g_thread;
static FILE* g_out;
static pid_t g_pid;
static ncclDebugLogger_t g_log;
static uint64_t g_window_ns = 1000000000ULL;
static int64_t g_realtime_offset_ns;
static uint64_t g_window_id; /* increments at every flush */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline void spin_lock(int* l) {
  while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }
}
static inline void spin_unlock(int* l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

#define C4_LOG(level, ...) \
  do { if (g_log) g_log((level), C4_NCCL_INIT_FLAG, __FILE__, __LINE__, __VA_ARGS__); } while (0)

/* ---- pools ---------------------------------------------------------------- */
static int pool_init(struct c4Pool* p, uint32_t size) {
  p->slots = calloc(size, sizeof(struct c4Event));
  p->free_stack = malloc(size * sizeof(uint32_t));
  if (!p->slots || !p->free_stack) return -1;
  for (uint32_t i = 0; i < size; i++) {
    p->free_stack[i] = size - 1 - i;
    p->slots[i].index = i;
  }
  p->top = size;
  p->size = size;
  return 0;
}

static void pool_free(struct c4Pool* p) {
  free(p->slots);
  free(p->free_stack);
}

static inline struct c4Event* pool_get(struct c4Pool* p) {
  struct c4Event* e = NULL;
  spin_lock(&p->lock);
  if (p->top) e = &p->slots[p->free_stack[--p->top]];
  spin_unlock(&p->lock);
  if (!e) {
    __atomic_fetch_add(&p->exhausted, 1, __ATOMIC_RELAXED);
    if (!__atomic_exchange_n(&g_warned_pool, 1, __ATOMIC_RELAXED))
      C4_LOG(C4_NCCL_LOG_WARN, "C4 profiler: event pool full, some events are not profiled");
  }
  return e;
}

static inline void pool_put(struct c4Pool* p, struct c4Event* e) {
  e->kind = 0;
  spin_lock(&p->lock);
  p->free_stack[p->top++] = e->index;
  spin_unlock(&p->lock);
}

static inline int in_pool(struct c4Pool* p, const void* ptr) {
  const char* base = (const char*)p->slots;
  const char* c = (const char*)ptr;
  return c >= base && c < base + (size_t)p->size * sizeof(struct c4Event) &&
         (size_t)(c - base) % sizeof(struct c4Event) == 0;
}

/* ---- connections ---------------------------------------------------------- */
/* A cell per (pid, rank, peer, channel, direction); pid and rank vary only in the PXN table. */
static struct c4Conn* conn_lookup(struct c4Comm* c, pid_t pid, int rank, int peer, int channel, int is_send) {
  uint64_t key = ((uint64_t)(uint32_t)(rank + 1) << 41) | ((uint64_t)(uint32_t)(peer + 1) << 9) |
                 ((uint64_t)(channel & 0xFF) << 1) | (is_send ? 1u : 0u);
  uint32_t h = (uint32_t)(((key ^ (uint64_t)(uint32_t)pid) * 0x9E3779B97F4A7C15ULL) >> 52) & (C4_CONN_SLOTS - 1);
  for (uint32_t i = 0; i < C4_CONN_SLOTS; i++) {
    struct c4Conn* s = &c->conns[(h + i) & (C4_CONN_SLOTS - 1)];
    uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
    if (k == key && s->pid == pid) return s;
    if (k == 0) {
      spin_lock(&c->conn_lock);
      k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
      if (k == 0) {
        s->pid = pid;
        s->rank = rank;
        s->peer = peer;
        s->channel = channel;
        s->is_send = is_send;
        __atomic_store_n(&s->key, key, __ATOMIC_RELEASE);
        spin_unlock(&c->conn_lock);
        return s;
      }
      spin_unlock(&c->conn_lock);
      if (k == key && s->pid == pid) return s;
    }
  }
  return NULL; /* table full: this connection is not aggregated */
}

/* ---- tasks (collectives and p2p) ------------------------------------------ */
static void task_complete_locked(struct c4Comm* c, struct c4Event* t, uint64_t stop_ns) {
  uint32_t next = (c->log_head + 1) % C4_TASK_LOG;
  if (next == c->log_tail) {
    c->log_dropped++;
  } else {
    struct c4TaskRecord* r = &c->log[c->log_head];
    r->seq = t->task.seq;
    r->start_ns = t->task.start_ns;
    r->stop_ns = stop_ns;
    r->func = t->task.func;
    r->count = t->task.count;
    r->is_p2p = t->task.is_p2p;
    r->peer = t->task.peer;
    r->had_ops = t->task.had_ops;
    c->log_head = next;
  }
  pool_put(&c->tasks, t);
}

/* ---- the API -------------------------------------------------------------- */
static void write_comm(struct c4Comm* c, uint64_t ts_real_ns) {
  if (!g_out) return;
  for (uint32_t i = 0; i < C4_CONN_SLOTS; i++) {
    struct c4Conn* s = &c->conns[i];
    if (!__atomic_load_n(&s->key, __ATOMIC_ACQUIRE)) continue;
    uint64_t ops = __atomic_exchange_n(&s->ops, 0, __ATOMIC_RELAXED);
    uint64_t steps = __atomic_exchange_n(&s->steps, 0, __ATOMIC_RELAXED);
    uint64_t bytes = __atomic_exchange_n(&s->bytes, 0, __ATOMIC_RELAXED);
    uint64_t net = __atomic_exchange_n(&s->net_ns, 0, __ATOMIC_RELAXED);
    uint64_t peer = __atomic_exchange_n(&s->peer_wait_ns, 0, __ATOMIC_RELAXED);
    uint64_t gpu = __atomic_exchange_n(&s->gpu_wait_ns, 0, __ATOMIC_RELAXED);
    if (!ops && !steps && !bytes) continue;
    fprintf(g_out,
            "{\"v\":1,\"kind\":\"conn\",\"ts_ns\":%llu,\"window_ns\":%llu,\"pid\":%d,\"comm\":\"0x%016llx\","
            "\"rank\":%d,\"peer\":%d,\"channel\":%d,\"dir\":\"%s\",\"dev\":\"\",\"port\":0,\"ops\":%llu,"
            "\"steps\":%llu,\"bytes\":%llu,\"net_us\":%.3f,\"wait_peer_us\":%.3f,\"wait_gpu_us\":%.3f",
            (unsigned long long)ts_real_ns, (unsigned long long)g_window_ns, (int)s->pid,
            (unsigned long long)c->comm_hash, s->rank, s->peer, s->channel, s->is_send ? "send" : "recv",
            (unsigned long long)ops, (unsigned long long)steps, (unsigned long long)bytes, net / 1e3,
            peer / 1e3, gpu / 1e3);
    if (c->pxn) fprintf(g_out, ",\"pxn\":true,\"proxy_pid\":%d", (int)g_pid);
    fputs("}\n", g_out);
  }
  if (c->pxn) return; /* PXN ops have no task of ours */
  /* completed collectives; and tasks enqueued long ago with no network activity */
  spin_lock(&c->task_lock);
  for (uint32_t i = 0; i < c->tasks.size; i++) {
    struct c4Event* t = &c->tasks.slots[i];
    if (t->kind == KIND_TASK && t->task.stopped && t->task.refs == 0 && !t->task.had_ops &&
        g_window_id > t->task.stop_window + 1)
      task_complete_locked(c, t, t->task.start_ns); /* launch only: no proxy activity seen */
  }
  uint32_t head = c->log_head;
  uint64_t dropped = c->log_dropped;
  c->log_dropped = 0;
  spin_unlock(&c->task_lock);
  while (c->log_tail != head) {
    struct c4TaskRecord* r = &c->log[c->log_tail];
    fprintf(g_out,
            "{\"v\":1,\"kind\":\"%s\",\"ts_ns\":%llu,\"pid\":%d,\"comm\":\"0x%016llx\",\"rank\":%d,"
            "\"seq\":%llu,\"func\":\"%s\",\"count\":%llu,\"peer\":%d,\"start_ns\":%llu,\"stop_ns\":%llu,"
            "\"network\":%s}\n",
            r->is_p2p ? "p2p" : "coll", (unsigned long long)ts_real_ns, (int)g_pid,
            (unsigned long long)c->comm_hash, c->rank, (unsigned long long)r->seq, r->func ? r->func : "",
            (unsigned long long)r->count, r->peer, (unsigned long long)(r->start_ns + g_realtime_offset_ns),
            (unsigned long long)(r->stop_ns + g_realtime_offset_ns), r->had_ops ? "true" : "false");
    __atomic_store_n(&c->log_tail, (c->log_tail + 1) % C4_TASK_LOG, __ATOMIC_RELEASE);
  }
  if (dropped)
    fprintf(g_out, "{\"v\":1,\"kind\":\"dropped\",\"ts_ns\":%llu,\"pid\":%d,\"comm\":\"0x%016llx\",\"records\":%llu}\n",
            (unsigned long long)ts_real_ns, (int)g_pid, (unsigned long long)c->comm_hash,
            (unsigned long long)dropped);
}

static uint64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void flush_all_locked(void) {
  uint64_t ts = realtime_ns();
  for (int i = 0; i < g_ncomms; i++) write_comm(g_comms[i], ts);
  if (g_pxn) write_comm(g_pxn, ts);
  g_window_id++;
  if (g_out) fflush(g_out);
}

static void* flush_thread(void* arg) {
  (void)arg;
  pthread_mutex_lock(&g_lock);
  while (!g_stop) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    uint64_t t = (uint64_t)deadline.tv_sec * 1000000000ULL + deadline.tv_nsec + g_window_ns;
    deadline.tv_sec = t / 1000000000ULL;
    deadline.tv_nsec = t % 1000000000ULL;
    int rc = pthread_cond_timedwait(&g_cond, &g_lock, &deadline);
    if (g_stop) break;
    if (rc == ETIMEDOUT) flush_all_locked();
  }
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

static void open_output_locked(void) {
  const char* dir = getenv("C4_NCCL_PROFILER_DIR");
  if (!dir || !*dir) dir = "/tmp/c4-nccl";
  const char* win = getenv("C4_NCCL_PROFILER_WINDOW_MS");
  if (win && atoi(win) > 0) g_window_ns = (uint64_t)atoi(win) * 1000000ULL;
  mkdir(dir, 0755); /* may exist already */
  char host[256] = "unknown";
  gethostname(host, sizeof(host) - 1);
  char path[4096];
  snprintf(path, sizeof(path), "%s/c4-conn-%s-%d.jsonl", dir, host, (int)g_pid);
  g_out = fopen(path, "a");
  if (!g_out && !g_warned_file) {
    g_warned_file = 1;
    C4_LOG(C4_NCCL_LOG_WARN, "C4 profiler: cannot open %s (%s); no connection records", path, strerror(errno));
  } else if (g_out) {
    C4_LOG(C4_NCCL_LOG_INFO, "C4 profiler: writing connection records to %s every %llu ms", path,
           (unsigned long long)(g_window_ns / 1000000ULL));
  }
}

static struct c4Comm* comm_alloc(void) {
  struct c4Comm* c = calloc(1, sizeof(*c));
  if (c && (pool_init(&c->tasks, C4_POOL_TASK) || pool_init(&c->ops, C4_POOL_OP) || pool_init(&c->steps, C4_POOL_STEP))) {
    pool_free(&c->tasks);
    pool_free(&c->ops);
    pool_free(&c->steps);
    free(c);
    c = NULL;
  }
  return c;
}

static void comm_free(struct c4Comm* c) {
  if (!c) return;
  pool_free(&c->tasks);
  pool_free(&c->ops);
  pool_free(&c->steps);
  free(c);
}

/* Stop and join the flush thread and close the output; call with g_lock held, returns with it held. */
static void stop_thread_locked(void) {
  if (g_thread_running) {
    g_stop = 1;
    pthread_cond_broadcast(&g_cond);
    pthread_t thread = g_thread;
    pthread_mutex_unlock(&g_lock);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&g_lock);
    g_thread_running = 0;
  }
  if (g_out) fclose(g_out);
  g_out = NULL;
}

/* Why an init handed out no context, once per reason and process. */
static void warn_no_context(int bit, const char* why) {
  if (__atomic_fetch_or(&g_warned_init, bit, __ATOMIC_RELAXED) & bit) return;
  C4_LOG(C4_NCCL_LOG_WARN, "C4 profiler: %s; this communicator is not profiled (others are)", why);
}

static ncclResult_t c4_init_common(void** context, int* eActivationMask, uint64_t comm_hash, int nranks, int rank,
                                   ncclDebugLogger_t logfn) {
  /* *eActivationMask is one process-wide int NCCL passes to every init: it is written only
   * when this init hands out a context, so a failed init never turns profiling off for the
   * communicators that have one. Only inits that hand out a context take a reference. */
  *context = NULL;
  if (logfn) g_log = logfn;
  pthread_mutex_lock(&g_life);
  pthread_mutex_lock(&g_lock);
  if (g_refs == 0 && !g_thread_running) {
    g_pid = getpid();
    g_stop = 0;
    g_realtime_offset_ns = (int64_t)realtime_ns() - (int64_t)now_ns();
    if (!g_out) open_output_locked();
    if (g_out && !g_pxn) __atomic_store_n(&g_pxn, comm_alloc(), __ATOMIC_RELEASE);
    if (g_pxn) g_pxn->pxn = 1;
    if (g_out && g_pxn) {
      if (pthread_create(&g_thread, NULL, flush_thread, NULL) == 0) g_thread_running = 1;
      else warn_no_context(1, "cannot start the flush thread");
    } else if (g_out) {
      warn_no_context(2, "out of memory");
    }
  }
  struct c4Comm* c = NULL;
  if (g_thread_running && g_ncomms >= C4_MAX_COMMS) {
    warn_no_context(4, "more than 1024 communicators");
  } else if (g_thread_running) {
    c = comm_alloc();
    if (!c) warn_no_context(2, "out of memory");
  }
  if (c) {
    c->comm_hash = comm_hash;
    c->rank = rank;
    c->nranks = nranks;
    g_comms[g_ncomms++] = c;
    g_refs++;
    *eActivationMask = c4ProfileColl | c4ProfileP2p | c4ProfileProxyOp | c4ProfileProxyStep;
    *context = c;
  } else if (g_refs == 0) {
    stop_thread_locked(); /* nothing holds a reference: leave no thread and no open file behind */
  }
  pthread_mutex_unlock(&g_lock);
  pthread_mutex_unlock(&g_life);
  return C4_NCCL_SUCCESS;
}

static ncclResult_t c4_init_v5(void** context, uint64_t commId, int* eActivationMask, const char* commName,
                               int nNodes, int nranks, int rank, ncclDebugLogger_t logfn) {
  (void)commName;
  (void)nNodes;
  return c4_init_common(context, eActivationMask, commId, nranks, rank, logfn);
}

static ncclResult_t c4_init_v4(void** context, int* eActivationMask, const char* commName, uint64_t commHash,
                               int nNodes, int nranks, int rank, ncclDebugLogger_t logfn) {
  (void)commName;
  (void)nNodes;
  return c4_init_common(context, eActivationMask, commHash, nranks, rank, logfn);
}

static ncclResult_t c4_start(struct c4Comm* c, void** eHandle, uint64_t type, void* parentObj, int rank,
                             union c4DescrPayload* u) {
  *eHandle = NULL;
  if (type == c4ProfileProxyStep) {
    /* The context may be another process's (PXN): the communicator comes from the parent op,
     * which is always a handle this process returned (or NULL). */
    struct c4Event* op = (struct c4Event*)parentObj;
    if (!op || __atomic_load_n(&op->kind, __ATOMIC_RELAXED) != KIND_OP) return C4_NCCL_SUCCESS;
    struct c4Comm* oc = op->comm;
    struct c4Event* e = pool_get(&oc->steps);
    if (!e) return C4_NCCL_SUCCESS;
    e->comm = oc;
    e->step.conn = op->op.conn;
    e->step.t_gpu = e->step.t_peer = e->step.t_net = e->step.t_recv = e->step.t_flush = 0;
    e->step.bytes = 0;
    e->kind = KIND_STEP;
    *eHandle = e;
  } else if (type == c4ProfileProxyOp) {
    pid_t pid = u->proxyOp.pid;
    if (pid != g_pid) {
      /* PXN: created by another process; context and parent are that process's pointers and
       * are never dereferenced. Aggregated per (pid, rank) of origin in the PXN table. */
      struct c4Comm* px = __atomic_load_n(&g_pxn, __ATOMIC_ACQUIRE);
      if (!px) return C4_NCCL_SUCCESS;
      struct c4Event* e = pool_get(&px->ops);
      if (!e) return C4_NCCL_SUCCESS;
      e->comm = px;
      e->op.conn = conn_lookup(px, pid, rank, u->proxyOp.peer, u->proxyOp.channelId, u->proxyOp.isSend);
      e->op.parent = NULL;
      e->kind = KIND_OP;
      *eHandle = e;
      return C4_NCCL_SUCCESS;
    }
    if (!c) return C4_NCCL_SUCCESS;
    struct c4Event* e = pool_get(&c->ops);
    if (!e) return C4_NCCL_SUCCESS;
    e->comm = c;
    e->op.conn = conn_lookup(c, g_pid, c->rank, u->proxyOp.peer, u->proxyOp.channelId, u->proxyOp.isSend);
    e->op.parent = NULL;
    /* our own op: its parent is one of our task handles (or NULL) */
    if (parentObj && in_pool(&c->tasks, parentObj)) {
      struct c4Event* t = (struct c4Event*)parentObj;
      spin_lock(&c->task_lock);
      if (t->kind == KIND_TASK) {
        t->task.refs++;
        t->task.had_ops = 1;
        e->op.parent = t;
      }
      spin_unlock(&c->task_lock);
    }
    e->kind = KIND_OP;
    *eHandle = e;
  } else if ((type == c4ProfileColl || type == c4ProfileP2p) && c) {
    struct c4Event* e = pool_get(&c->tasks);
    if (!e) return C4_NCCL_SUCCESS;
    e->comm = c;
    int p2p = type == c4ProfileP2p;
    e->task.seq = p2p ? 0 : u->coll.seqNumber;
    e->task.func = p2p ? u->p2p.func : u->coll.func;
    e->task.count = p2p ? u->p2p.count : u->coll.count;
    e->task.peer = p2p ? u->p2p.peer : -1;
    e->task.is_p2p = p2p;
    e->task.refs = e->task.stopped = e->task.had_ops = 0;
    e->task.start_ns = now_ns();
    spin_lock(&c->task_lock);
    e->kind = KIND_TASK;
    spin_unlock(&c->task_lock);
    *eHandle = e;
  }
  return C4_NCCL_SUCCESS;
}

static ncclResult_t c4_start_v5(void* context, void** eHandle, c4EventDescr_v5* d) {
  if (!d) {
    if (eHandle) *eHandle = NULL;
    return C4_NCCL_SUCCESS;
  }
  return c4_start((struct c4Comm*)context, eHandle, d->type, d->parentObj, d->rank, &d->u);
}

static ncclResult_t c4_start_v4(void* context, void** eHandle, c4EventDescr_v4* d) {
  if (!d) {
    if (eHandle) *eHandle = NULL;
    return C4_NCCL_SUCCESS;
  }
  return c4_start((struct c4Comm*)context, eHandle, d->type, d->parentObj, d->rank, &d->u);
}

static ncclResult_t c4_record(void* eHandle, int state, c4EventStateArgs* args) {
  struct c4Event* e = (struct c4Event*)eHandle;
  if (!e || e->kind != KIND_STEP) return C4_NCCL_SUCCESS;
  uint64_t t = now_ns();
  switch (state) {
    case c4ProxyStepSendGPUWait: e->step.t_gpu = t; break;
    case c4ProxyStepSendPeerWait: e->step.t_peer = t; break;
    case c4ProxyStepSendWait:
      e->step.t_net = t;
      if (args) e->step.bytes = args->proxyStep.transSize;
      break;
    case c4ProxyStepRecvWait: e->step.t_recv = t; break;
    case c4ProxyStepRecvFlushWait:
      e->step.t_flush = t;
      if (args) e->step.bytes = args->proxyStep.transSize;
      break;
    case c4ProxyStepRecvGPUWait:
      if (!e->step.t_flush) e->step.t_flush = t;
      break;
    default: break;
  }
  return C4_NCCL_SUCCESS;
}

static ncclResult_t c4_stop(void* eHandle) {
  struct c4Event* e = (struct c4Event*)eHandle;
  if (!e) return C4_NCCL_SUCCESS;
  struct c4Comm* c = e->comm;
  if (e->kind == KIND_STEP) {
    uint64_t t = now_ns();
    struct c4Conn* s = e->step.conn;
    if (s) {
      uint64_t gpu = 0, peer = 0, net = 0;
      if (e->step.t_net) { /* send: GPU wait -> peer wait -> network */
        uint64_t ready = e->step.t_peer ? e->step.t_peer : e->step.t_net;
        if (e->step.t_gpu && ready >= e->step.t_gpu) gpu = ready - e->step.t_gpu;
        if (e->step.t_peer && e->step.t_net >= e->step.t_peer) peer = e->step.t_net - e->step.t_peer;
        net = t - e->step.t_net;
      } else if (e->step.t_recv) { /* recv: data arriving over the network -> flush/consume */
        uint64_t arrived = e->step.t_flush ? e->step.t_flush : t;
        net = arrived - e->step.t_recv;
        if (e->step.t_flush) gpu = t - e->step.t_flush;
      }
      __atomic_fetch_add(&s->steps, 1, __ATOMIC_RELAXED);
      __atomic_fetch_add(&s->bytes, e->step.bytes, __ATOMIC_RELAXED);
      __atomic_fetch_add(&s->net_ns, net, __ATOMIC_RELAXED);
      __atomic_fetch_add(&s->peer_wait_ns, peer, __ATOMIC_RELAXED);
      __atomic_fetch_add(&s->gpu_wait_ns, gpu, __ATOMIC_RELAXED);
    }
    pool_put(&c->steps, e);
  } else if (e->kind == KIND_OP) {
    if (e->op.conn) __atomic_fetch_add(&e->op.conn->ops, 1, __ATOMIC_RELAXED);
    struct c4Event* t = e->op.parent;
    if (t) {
      uint64_t now = now_ns();
      spin_lock(&c->task_lock);
      if (--t->task.refs == 0 && t->task.stopped) task_complete_locked(c, t, now);
      spin_unlock(&c->task_lock);
    }
    pool_put(&c->ops, e);
  } else if (e->kind == KIND_TASK) {
    /* stop = enqueued; the task completes when its last proxy op stops */
    spin_lock(&c->task_lock);
    e->task.stopped = 1;
    e->task.stop_window = g_window_id;
    if (e->task.had_ops && e->task.refs == 0) task_complete_locked(c, e, now_ns());
    spin_unlock(&c->task_lock);
  }
  return C4_NCCL_SUCCESS;
}

static ncclResult_t c4_finalize(void* context) {
  /* NULL: an init that handed out no context and took no reference (NCCL 2.27 still calls
   * finalize for it, 2.28+ does not); nothing to do either way. */
  struct c4Comm* c = (struct c4Comm*)context;
  if (!c) return C4_NCCL_SUCCESS;
  pthread_mutex_lock(&g_life);
  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < g_ncomms; i++) {
    if (g_comms[i] == c) {
      g_comms[i] = g_comms[--g_ncomms];
      break;
    }
  }
  /* whatever is still open never completed: report it as launch-only */
  spin_lock(&c->task_lock);
  for (uint32_t i = 0; i < c->tasks.size; i++) {
    struct c4Event* t = &c->tasks.slots[i];
    if (t->kind == KIND_TASK && t->task.stopped && t->task.refs == 0) task_complete_locked(c, t, t->task.start_ns);
  }
  spin_unlock(&c->task_lock);
  uint64_t ts = realtime_ns();
  write_comm(c, ts);
  if (--g_refs == 0) {
    if (g_pxn) write_comm(g_pxn, ts);
    stop_thread_locked();
  } else if (g_out) {
    fflush(g_out);
  }
  pthread_mutex_unlock(&g_lock);
  pthread_mutex_unlock(&g_life);
  comm_free(c);
  return C4_NCCL_SUCCESS;
}

/* Unload (NCCL dlcloses the plugin when its last communicator is gone, or the process exits):
 * the flush thread must never outlive the code it runs. */
__attribute__((destructor)) static void c4_unload(void) {
  pthread_mutex_lock(&g_life);
  pthread_mutex_lock(&g_lock);
  stop_thread_locked();
  /* Communicators still alive means the process is exiting without destroying them: their
   * proxy threads may still run, so the PXN table is left to the exiting process. */
  struct c4Comm* px = g_refs == 0 ? g_pxn : NULL;
  if (px) __atomic_store_n(&g_pxn, NULL, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&g_lock);
  pthread_mutex_unlock(&g_life);
  comm_free(px);
}

/* NCCL 2.23-2.26 look up only ncclProfiler_v1..v3: they get these, which say so once and
 * hand out no context (the mask stays 0, so NCCL sends no events). v1-v3 have no logger. */
static int g_legacy_said;
static ncclResult_t legacy_init(int version, void** context) {
  *context = NULL;
  if (!__atomic_exchange_n(&g_legacy_said, 1, __ATOMIC_RELAXED))
    fprintf(stderr,
            "C4 profiler: this NCCL offers profiler API v%d only (NCCL 2.23-2.26); the C4 plugin needs "
            "NCCL 2.27 or later (API v4-v6); no connection records\n",
            version);
  return C4_NCCL_SUCCESS;
}
static ncclResult_t legacy_init_v1(void** context, int* mask) { (void)mask; return legacy_init(1, context); }
static ncclResult_t legacy_init_v2(void** context, int* mask) { (void)mask; return legacy_init(2, context); }
static ncclResult_t legacy_init_v3(void** context, int* mask) { (void)mask; return legacy_init(3, context); }
static ncclResult_t legacy_start(void* context, void** eHandle, void* d) {
  (void)context, (void)d;
  if (eHandle) *eHandle = NULL;
  return C4_NCCL_SUCCESS;
}
static ncclResult_t legacy_record(void* eHandle, int state, void* args) {
  (void)eHandle, (void)state, (void)args;
  return C4_NCCL_SUCCESS;
}
static ncclResult_t legacy_noop(void* p) { (void)p; return C4_NCCL_SUCCESS; }

/* The symbols NCCL looks up, newest first. v6 widened only the descriptor union, so it
 * shares the v5 entry points; v4 differs in init's argument order and an 8-bit type. */
C4_EXPORT c4Profiler_v5 ncclProfiler_v6 = {"C4", c4_init_v5, c4_start_v5, c4_stop, c4_record, c4_finalize};
C4_EXPORT c4Profiler_v5 ncclProfiler_v5 = {"C4", c4_init_v5, c4_start_v5, c4_stop, c4_record, c4_finalize};
C4_EXPORT c4Profiler_v4 ncclProfiler_v4 = {"C4", c4_init_v4, c4_start_v4, c4_stop, c4_record, c4_finalize};
C4_EXPORT c4ProfilerLegacy ncclProfiler_v3 = {"C4", legacy_init_v3, legacy_start, legacy_noop, legacy_record, legacy_noop};
C4_EXPORT c4ProfilerLegacy ncclProfiler_v2 = {"C4", legacy_init_v2, legacy_start, legacy_noop, legacy_record, legacy_noop};
C4_EXPORT c4ProfilerLegacy ncclProfiler_v1 = {"C4", legacy_init_v1, legacy_start, legacy_noop, legacy_record, legacy_noop};

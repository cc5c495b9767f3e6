/*
 * Drives a profiler plugin exactly as NCCL does, without a GPU: dlopen, look up
 * ncclProfiler_vN, then init / startEvent / recordEventState / stopEvent / finalize.
 *
 *   driver ring  LIB VERSION ITERS CHANNELS STEPS CHUNK_BYTES
 *       a ring all-reduce seen from rank 0 of 4: per channel a send op to rank 1 and a
 *       recv op from rank 3, collectives stopped (enqueued) before their proxy ops start,
 *       steps stopped in reverse order on odd channels. Prints what the records must add up to.
 *   driver pxn LIB VERSION OPS STEPS CHUNK_BYTES unmapped|mapped
 *       PXN as NCCL (2.27-2.30) does it: a second process (rank 0, `pxn-sender`) loads the
 *       plugin, inits its communicator, starts and stops a collective and copies proxy ops into
 *       a shared-memory pool (/dev/shm/nccl-XXXXXX, like ncclLocalOpAppend's memcpy of
 *       struct ncclProxyOp): its profilerContext, its taskEventHandle and its pid. This
 *       process (rank 1, the proxy owning the NIC) then calls startEvent(op.profilerContext,
 *       {ProxyOp, parentObj = op.taskEventHandle, rank = op.rank, proxyOp.pid = op.pid}) and
 *       the steps with startEvent(op.profilerContext, {ProxyStep, parentObj = op handle}), as
 *       ncclProfilerStartProxyOpEvent / ...ProxyStepEvent do. The foreign pointers are
 *       unmapped here, or (`mapped`) backed by a zeroed canary mapping that must stay zero.
 *       Interleaved with ops of this process's own communicator.
 *   driver inits LIB VERSION oom|thread
 *       two communicators in one process sharing NCCL's one event-mask int; one init ends
 *       without a context (`oom`: the second runs out of address space; `thread`: the first
 *       cannot start a thread). Finalize as NCCL of that API version does (v4 = 2.27 calls it
 *       for a NULL context, v5+ = 2.28+ skips it), then dlclose like ncclProfilerPluginUnload
 *       and check that no plugin thread outlives the library.
 *   driver legacy LIB 2.23|2.24|2.25|2.26
 *       what NCCL 2.23-2.26 do with a plugin: look up ncclProfiler_v3..v1 only, init(&ctx, &mask),
 *       finalize, dlclose.
 *   driver bench LIB VERSION OPS
 *       OPS proxy ops of 8 steps each inside collectives; prints ns per profiler call.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nccl_profiler_api.h"

static int warnings;

static void logger(int level, unsigned long flags, const char* file, int line, const char* fmt, ...) {
  (void)flags;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "NCCL %s %s:%d ", level == C4_NCCL_LOG_WARN ? "WARN" : "INFO", file, line);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (level == C4_NCCL_LOG_WARN) warnings++;
}

struct api {
  int version;
  c4Profiler_v4* v4;
  c4Profiler_v5* v5;
  void* ctx;
  int rank;
};

/* NCCL's one process-wide event mask (ncclProfilerEventMask), passed to every init. */
static int g_event_mask;

static void api_init(struct api* a, uint64_t comm_hash, int nranks, int rank) {
  a->rank = rank;
  if (a->version == 4)
    a->v4->init(&a->ctx, &g_event_mask, "c4-driver", comm_hash, 2, nranks, rank, logger);
  else
    a->v5->init(&a->ctx, comm_hash, &g_event_mask, "c4-driver", 2, nranks, rank, logger);
}

static void* api_start_rank(struct api* a, uint64_t type, void* parent, int rank, union c4DescrPayload* u) {
  void* h = NULL;
  if (a->version == 4) {
    c4EventDescr_v4 d;
    memset(&d, 0, sizeof(d));
    d.type = (uint8_t)type;
    d.parentObj = parent;
    d.rank = rank;
    d.u = *u;
    a->v4->startEvent(a->ctx, &h, &d);
  } else {
    c4EventDescr_v5 d;
    memset(&d, 0, sizeof(d));
    d.type = type;
    d.parentObj = parent;
    d.rank = rank;
    d.u = *u;
    a->v5->startEvent(a->ctx, &h, &d);
  }
  return h;
}

static void* api_start(struct api* a, uint64_t type, void* parent, union c4DescrPayload* u) {
  return api_start_rank(a, type, parent, a->rank, u);
}

static void api_record(struct api* a, void* h, int state, size_t bytes) {
  c4EventStateArgs args;
  memset(&args, 0, sizeof(args));
  args.proxyStep.transSize = bytes;
  if (a->version == 4) a->v4->recordEventState(h, state, &args);
  else a->v5->recordEventState(h, state, &args);
}

static void api_stop(struct api* a, void* h) {
  if (a->version == 4) a->v4->stopEvent(h);
  else a->v5->stopEvent(h);
}

static void api_finalize(struct api* a) {
  if (a->version == 4) a->v4->finalize(a->ctx);
  else a->v5->finalize(a->ctx);
}

static void* start_coll(struct api* a, uint64_t seq) {
  union c4DescrPayload u;
  memset(&u, 0, sizeof(u));
  u.coll.seqNumber = seq;
  u.coll.func = "AllReduce";
  u.coll.count = 1 << 20;
  u.coll.datatype = "ncclFloat32";
  u.coll.algo = "RING";
  u.coll.proto = "SIMPLE";
  return api_start(a, c4ProfileColl, NULL, &u);
}

static void* start_op_ctx(struct api* a, void* ctx, void* parent, int rank, pid_t pid, int channel, int peer,
                          int is_send, int steps) {
  void* saved = a->ctx;
  a->ctx = ctx;
  union c4DescrPayload u;
  memset(&u, 0, sizeof(u));
  u.proxyOp.pid = pid;
  u.proxyOp.channelId = (uint8_t)channel;
  u.proxyOp.peer = peer;
  u.proxyOp.nSteps = steps;
  u.proxyOp.chunkSize = 1 << 19;
  u.proxyOp.isSend = is_send;
  void* h = api_start_rank(a, c4ProfileProxyOp, parent, rank, &u);
  a->ctx = saved;
  return h;
}

static void* start_op(struct api* a, void* parent, pid_t pid, int channel, int peer, int is_send, int steps) {
  union c4DescrPayload u;
  memset(&u, 0, sizeof(u));
  u.proxyOp.pid = pid;
  u.proxyOp.channelId = (uint8_t)channel;
  u.proxyOp.peer = peer;
  u.proxyOp.nSteps = steps;
  u.proxyOp.chunkSize = 1 << 19;
  u.proxyOp.isSend = is_send;
  return api_start(a, c4ProfileProxyOp, parent, &u);
}

static void* start_step(struct api* a, void* op, int step) {
  union c4DescrPayload u;
  memset(&u, 0, sizeof(u));
  u.proxyStep.step = step;
  return api_start(a, c4ProfileProxyStep, op, &u);
}

static void send_step_states(struct api* a, void* s, size_t bytes) {
  api_record(a, s, c4ProxyStepSendGPUWait, 0);
  api_record(a, s, c4ProxyStepSendPeerWait, 0);
  api_record(a, s, c4ProxyStepSendWait, bytes);
}

static void recv_step_states(struct api* a, void* s, size_t bytes) {
  api_record(a, s, c4ProxyStepRecvWait, 0);
  api_record(a, s, c4ProxyStepRecvFlushWait, bytes);
  api_record(a, s, c4ProxyStepRecvGPUWait, 0);
}

static int ring(struct api* a, int iters, int channels, int steps, size_t chunk) {
  const uint64_t comm_hash = 0x9a3f1c22d1e0b7a4ULL;
  api_init(a, comm_hash, 4, 0);
  if (!a->ctx) {
    fprintf(stderr, "driver: plugin gave no context\n");
    return 1;
  }
  void* send_steps[256];
  void* recv_steps[256];
  if (steps > 256) steps = 256;
  for (int it = 0; it < iters; it++) {
    void* coll = start_coll(a, (uint64_t)it);
    api_stop(a, coll); /* enqueued: proxy activity comes after */
    for (int ch = 0; ch < channels; ch++) {
      void* op_send = start_op(a, coll, getpid(), ch, 1, 1, steps);
      void* op_recv = start_op(a, coll, getpid(), ch, 3, 0, steps);
      for (int s = 0; s < steps; s++) {
        send_steps[s] = start_step(a, op_send, s);
        recv_steps[s] = start_step(a, op_recv, s);
        send_step_states(a, send_steps[s], chunk);
        recv_step_states(a, recv_steps[s], chunk);
      }
      for (int s = 0; s < steps; s++) { /* odd channels stop their steps last-first */
        int k = (ch % 2) ? steps - 1 - s : s;
        api_stop(a, send_steps[k]);
        api_stop(a, recv_steps[k]);
      }
      if (ch % 2) {
        api_stop(a, op_recv);
        api_stop(a, op_send);
      } else {
        api_stop(a, op_send);
        api_stop(a, op_recv);
      }
    }
    if (it % 8 == 7) usleep(3000); /* let windows roll over mid-run */
  }
  api_finalize(a);
  printf("{\"comm\":\"0x%016llx\",\"rank\":0,\"colls\":%d,\"conns\":[", (unsigned long long)comm_hash, iters);
  for (int ch = 0; ch < channels; ch++) {
    printf("%s{\"peer\":1,\"channel\":%d,\"dir\":\"send\",\"ops\":%d,\"steps\":%d,\"bytes\":%zu},", ch ? "," : "", ch,
           iters, iters * steps, (size_t)iters * steps * chunk);
    printf("{\"peer\":3,\"channel\":%d,\"dir\":\"recv\",\"ops\":%d,\"steps\":%d,\"bytes\":%zu}", ch, iters,
           iters * steps, (size_t)iters * steps * chunk);
  }
  printf("],\"warnings\":%d}\n", warnings);
  return 0;
}

static double mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int bench(struct api* a, long ops) {
  api_init(a, 0x1234ULL, 8, 0);
  long calls = 0;
  double t0 = mono_ns();
  for (long i = 0; i < ops; i++) {
    void* coll = start_coll(a, (uint64_t)i);
    api_stop(a, coll);
    void* op = start_op(a, coll, getpid(), (int)(i % 16), 1, (int)(i & 1), 8);
    for (int s = 0; s < 8; s++) {
      void* st = start_step(a, op, s);
      if (i & 1) send_step_states(a, st, 4096);
      else recv_step_states(a, st, 4096);
      api_stop(a, st);
    }
    api_stop(a, op);
    calls += 2 + 2 + 8 * 5;
  }
  double elapsed = mono_ns() - t0;
  api_finalize(a);
  printf("{\"calls\":%ld,\"ns_per_event\":%.2f}\n", calls, elapsed / calls);
  return 0;
}

/* ---- PXN: proxy ops another process created ---------------------------------------- */

#define PXN_MAX_OPS 256
#define PXN_CANARY_BYTES (4u << 20) /* covers any context or task object the foreign pointer names */

struct pxnOp { /* the fields of struct ncclProxyOp the profiler hooks read */
  void* profilerContext; /* the creating process's comm->profilerContext */
  void* taskEventHandle; /* its collective's event handle */
  pid_t pid;             /* its pid (ncclProfilerAddPidToProxyOp) */
  int rank, channelId, peer, nsteps, isSend;
};

struct pxnPool { /* lives in /dev/shm like ncclProxyOpsPool */
  int ready, done, nops;
  struct pxnOp ops[PXN_MAX_OPS];
};

static struct pxnPool* pool_map(const char* path, int create) {
  int fd = open(path, O_RDWR | (create ? O_CREAT : 0), 0600);
  if (fd < 0) return NULL;
  if (create && ftruncate(fd, sizeof(struct pxnPool)) != 0) {
    close(fd);
    return NULL;
  }
  void* p = mmap(NULL, sizeof(struct pxnPool), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  return p == MAP_FAILED ? NULL : p;
}

static int wait_flag(int* flag, int seconds) {
  for (int i = 0; i < seconds * 1000; i++) {
    if (__atomic_load_n(flag, __ATOMIC_ACQUIRE)) return 0;
    usleep(1000);
  }
  return -1;
}

/* Rank 0 of the communicator, in its own process: enqueues ops for the PXN proxy. */
static int pxn_sender(struct api* a, const char* path, int nops, int steps) {
  struct pxnPool* pool = pool_map(path, 0);
  if (!pool) {
    fprintf(stderr, "pxn-sender: cannot map %s\n", path);
    return 2;
  }
  api_init(a, 0x9a3f1c22d1e0b7a4ULL, 4, 0);
  void* coll = start_coll(a, 0);
  api_stop(a, coll); /* enqueued; its proxy ops run in the other process */
  if (nops > PXN_MAX_OPS) nops = PXN_MAX_OPS;
  for (int i = 0; i < nops; i++) {
    struct pxnOp op = {a->ctx, coll, getpid(), 0, i % 2, 2, steps, 1};
    memcpy(&pool->ops[i], &op, sizeof(op));
  }
  pool->nops = nops;
  __atomic_store_n(&pool->ready, 1, __ATOMIC_RELEASE);
  int rc = wait_flag(&pool->done, 120) ? 3 : 0;
  api_finalize(a);
  munmap(pool, sizeof(*pool));
  return rc;
}

/* Does [p, p+len) overlap any mapping of this process? (/proc/self/maps: no access to p itself) */
static int range_mapped(void* p, size_t len) {
  FILE* f = fopen("/proc/self/maps", "r");
  if (!f) return 1;
  unsigned long lo, hi, start = (unsigned long)p, end = (unsigned long)p + len;
  char line[512];
  int hit = 0;
  while (!hit && fgets(line, sizeof(line), f))
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo < end && start < hi) hit = 1;
  fclose(f);
  return hit;
}

static int canary_zero(const unsigned char* c, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (c[i]) return 0;
  return 1;
}

static int pxn(struct api* a, char* self, const char* lib, int nops, int steps, size_t chunk, int mapped) {
  char path[] = "/dev/shm/nccl-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    fprintf(stderr, "driver: mkstemp %s: %s\n", path, strerror(errno));
    return 2;
  }
  close(fd);
  struct pxnPool* pool = pool_map(path, 1);
  if (!pool) return 2;
  memset(pool, 0, sizeof(*pool));
  char version[16], ops_s[16], steps_s[16];
  snprintf(version, sizeof(version), "%d", a->version);
  snprintf(ops_s, sizeof(ops_s), "%d", nops);
  snprintf(steps_s, sizeof(steps_s), "%d", steps);
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* if this (proxy) process dies, the sender goes with it */
    execl(self, self, "pxn-sender", lib, version, path, ops_s, steps_s, (char*)NULL); /* a fresh address space */
    _exit(127);
  }
  api_init(a, 0x9a3f1c22d1e0b7a4ULL, 4, 1); /* this process: rank 1 of the same communicator */
  if (!a->ctx || wait_flag(&pool->ready, 60)) {
    fprintf(stderr, "driver: %s\n", a->ctx ? "pxn-sender never enqueued its ops" : "plugin gave no context");
    kill(child, SIGKILL);
    unlink(path);
    return 1;
  }
  void* foreign[2] = {pool->ops[0].profilerContext, pool->ops[0].taskEventHandle};
  void* canary[2] = {NULL, NULL};
  for (int i = 0; i < 2; i++) {
    if (range_mapped(foreign[i], PXN_CANARY_BYTES)) { /* ASLR put something of ours there: rerun */
      fprintf(stderr, "driver: foreign pointer %p is mapped in this process too\n", foreign[i]);
      __atomic_store_n(&pool->done, 1, __ATOMIC_RELEASE);
      waitpid(child, NULL, 0);
      unlink(path);
      return 3;
    }
    if (mapped) { /* another mapping at the foreign address: zeroed, must stay zero */
      void* base = (void*)((uintptr_t)foreign[i] & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1));
      if (i == 1 && canary[0] && (char*)base >= (char*)canary[0] &&
          (char*)base < (char*)canary[0] + PXN_CANARY_BYTES)
        continue;
      canary[i] = mmap(base, PXN_CANARY_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
      if (canary[i] == MAP_FAILED) canary[i] = NULL;
    }
  }
  void* send_steps[256];
  if (steps > 256) steps = 256;
  int local_ops = 0;
  for (int i = 0; i < pool->nops; i++) {
    struct pxnOp* op = &pool->ops[i]; /* as the proxy thread reads ncclProxySubArgs */
    void* h = start_op_ctx(a, op->profilerContext, op->taskEventHandle, op->rank, op->pid, op->channelId, op->peer,
                           op->isSend, op->nsteps);
    for (int s = 0; s < op->nsteps && s < 256; s++) {
      void* saved = a->ctx;
      a->ctx = op->profilerContext;
      union c4DescrPayload u;
      memset(&u, 0, sizeof(u));
      u.proxyStep.step = s;
      send_steps[s] = api_start_rank(a, c4ProfileProxyStep, h, op->rank, &u);
      a->ctx = saved;
      send_step_states(a, send_steps[s], chunk);
    }
    for (int s = 0; s < op->nsteps && s < 256; s++) api_stop(a, send_steps[s]);
    api_stop(a, h);
    /* this process's own traffic in between: a collective and its recv op from rank 0 */
    void* coll = start_coll(a, (uint64_t)i);
    api_stop(a, coll);
    void* own = start_op(a, coll, getpid(), 0, 0, 0, 1);
    void* st = start_step(a, own, 0);
    recv_step_states(a, st, chunk);
    api_stop(a, st);
    api_stop(a, own);
    local_ops++;
  }
  int intact = 1;
  for (int i = 0; i < 2; i++) {
    if (!canary[i]) continue;
    intact &= canary_zero(canary[i], PXN_CANARY_BYTES);
    munmap(canary[i], PXN_CANARY_BYTES);
  }
  int nsent = pool->nops;
  pid_t sender_pid = pool->ops[0].pid;
  __atomic_store_n(&pool->done, 1, __ATOMIC_RELEASE);
  int status = 0;
  waitpid(child, &status, 0);
  api_finalize(a);
  munmap(pool, sizeof(*pool));
  unlink(path);
  printf("{\"comm\":\"0x9a3f1c22d1e0b7a4\",\"pxn\":{\"pid\":%d,\"rank\":0,\"peer\":2,\"dir\":\"send\",\"ops\":%d,"
         "\"steps\":%d,\"bytes\":%zu},\"local\":{\"rank\":1,\"peer\":0,\"channel\":0,\"dir\":\"recv\",\"ops\":%d,"
         "\"steps\":%d,\"bytes\":%zu},\"canary\":%s,\"sender_rc\":%d,\"warnings\":%d}\n",
         (int)sender_pid, nsent, nsent * steps, (size_t)nsent * steps * chunk, local_ops, local_ops,
         (size_t)local_ops * chunk, !mapped ? "null" : intact ? "\"intact\"" : "\"written\"",
         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), warnings);
  return 0;
}

/* ---- two communicators, one init without a context ------------------------------------ */

static int count_threads(void) {
  DIR* d = opendir("/proc/self/task");
  int n = 0;
  if (!d) return -1;
  for (struct dirent* e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Lower the address-space limit to what is mapped now plus `slack` bytes. */
static void limit_as(struct rlimit* saved, size_t slack) {
  getrlimit(RLIMIT_AS, saved);
  long pages = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld", &pages) != 1) pages = 0;
    fclose(f);
  }
  struct rlimit r = *saved;
  r.rlim_cur = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + slack;
  setrlimit(RLIMIT_AS, &r);
}

/* One small collective with one op of one step on a communicator; returns its context's mask view. */
static void traffic(struct api* a, size_t chunk) {
  void* coll = start_coll(a, 0);
  api_stop(a, coll);
  void* op = start_op(a, coll, getpid(), 0, 1, 1, 1);
  void* st = start_step(a, op, 0);
  send_step_states(a, st, chunk);
  api_stop(a, st);
  api_stop(a, op);
}

/* NCCL's ncclProfilerPluginFinalize: 2.27 (API v4) always calls finalize, 2.28+ only for a context. */
static void nccl_finalize(struct api* a) {
  if (a->version == 4 || a->ctx) api_finalize(a);
}

static int inits(struct api* a, void* lib, const char* scenario) {
  struct api b = *a;
  a->ctx = b.ctx = NULL;
  struct rlimit saved;
  int threads_before = count_threads();
  int mask_after_failed_init;
  if (!strcmp(scenario, "oom")) {
    api_init(a, 0xa0a0ULL, 2, 0);
    limit_as(&saved, 64 << 10); /* the second communicator's memory cannot be had */
    api_init(&b, 0xb0b0ULL, 2, 0);
    setrlimit(RLIMIT_AS, &saved);
    mask_after_failed_init = g_event_mask;
  } else {
    limit_as(&saved, 6 << 20); /* room for the plugin's memory, not for an 8 MiB thread stack */
    api_init(a, 0xa0a0ULL, 2, 0);
    setrlimit(RLIMIT_AS, &saved);
    mask_after_failed_init = g_event_mask;
    api_init(&b, 0xb0b0ULL, 2, 0);
  }
  int have_a = a->ctx != NULL, have_b = b.ctx != NULL;
  if (a->ctx) traffic(a, 4096);
  if (b.ctx) traffic(&b, 4096);
  nccl_finalize(a);
  nccl_finalize(&b);
  int threads_loaded = count_threads();
  dlclose(lib); /* ncclProfilerPluginUnload: the refcount NCCL keeps reached 0 */
  usleep(100000); /* several flush windows: a thread left behind would run unmapped code now */
  printf("{\"mask_after_failed_init\":%d,\"mask\":%d,\"ctx_a\":%s,\"ctx_b\":%s,\"threads_before\":%d,"
         "\"threads_after_finalize\":%d,\"threads_after_unload\":%d,\"warnings\":%d}\n",
         mask_after_failed_init, g_event_mask, have_a ? "true" : "false", have_b ? "true" : "false", threads_before,
         threads_loaded, count_threads(), warnings);
  return 0;
}

/* ---- NCCL 2.23-2.26: profiler API v1..v3 only ----------------------------------------- */

static int legacy(void* lib, const char* nccl_version) {
  int newest = !strcmp(nccl_version, "2.23") ? 1 : !strcmp(nccl_version, "2.26") ? 3 : 2;
  c4ProfilerLegacy* p = NULL;
  int v;
  for (v = newest; v >= 1 && !p; v--) {
    char sym[32];
    snprintf(sym, sizeof(sym), "ncclProfiler_v%d", v);
    p = dlsym(lib, sym);
    fprintf(stderr, "NCCL INFO PROFILER/Plugin: %s %s\n", p ? "loaded" : "failed to find", p ? p->name : sym);
  }
  if (!p) {
    dlclose(lib);
    printf("{\"loaded\":null}\n");
    return 0;
  }
  void* ctx = (void*)0x1;
  int mask = 0;
  int rc = p->init(&ctx, &mask);
  if (mask) { /* NCCL would now send events of its v1-v3 layout */
    void* h = NULL;
    p->startEvent(ctx, &h, NULL);
  }
  p->finalize(ctx);
  dlclose(lib);
  printf("{\"loaded\":%d,\"init_rc\":%d,\"ctx\":%s,\"mask\":%d}\n", v + 1, rc, ctx ? "\"set\"" : "null", mask);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s ring LIB VERSION ITERS CHANNELS STEPS CHUNK | pxn LIB VERSION OPS STEPS CHUNK "
                    "unmapped|mapped | inits LIB VERSION oom|thread | legacy LIB 2.23..2.26 | bench LIB VERSION OPS\n",
            argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "driver: %s\n", dlerror());
    return 2;
  }
  if (!strcmp(argv[1], "legacy")) return legacy(lib, argv[3]);
  struct api a;
  memset(&a, 0, sizeof(a));
  a.version = atoi(argv[3]);
  char sym[32];
  snprintf(sym, sizeof(sym), "ncclProfiler_v%d", a.version);
  void* p = dlsym(lib, sym);
  if (!p) {
    fprintf(stderr, "driver: %s not exported\n", sym);
    return 2;
  }
  if (a.version == 4) a.v4 = p;
  else a.v5 = p;
  int rc;
  if (!strcmp(argv[1], "ring") && argc == 8)
    rc = ring(&a, atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), (size_t)atol(argv[7]));
  else if (!strcmp(argv[1], "pxn") && argc == 8)
    rc = pxn(&a, argv[0], argv[2], atoi(argv[4]), atoi(argv[5]), (size_t)atol(argv[6]), !strcmp(argv[7], "mapped"));
  else if (!strcmp(argv[1], "pxn-sender") && argc == 7)
    rc = pxn_sender(&a, argv[4], atoi(argv[5]), atoi(argv[6]));
  else if (!strcmp(argv[1], "inits") && argc == 5)
    return inits(&a, lib, argv[4]); /* unloads the library itself */
  else if (!strcmp(argv[1], "bench") && argc == 5)
    rc = bench(&a, atol(argv[4]));
  else {
    fprintf(stderr, "driver: bad arguments\n");
    rc = 2;
  }
  dlclose(lib);
  return rc;
}

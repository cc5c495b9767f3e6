/*
 * Drives a profiler plugin exactly as NCCL does, without a GPU: dlopen, look up
 * ncclProfiler_vN, then init / startEvent / recordEventState / stopEvent / finalize.
 *
 *   driver ring  LIB VERSION ITERS CHANNELS STEPS CHUNK_BYTES
 *       a ring all-reduce seen from rank 0 of 4: per channel a send op to rank 1 and a
 *       recv op from rank 3, collectives stopped (enqueued) before their proxy ops start,
 *       steps stopped in reverse order on odd channels, and one PXN op per iteration whose
 *       parent pointer belongs to another process. Prints what the records must add up to.
 *   driver bench LIB VERSION OPS
 *       OPS proxy ops of 8 steps each inside collectives; prints ns per profiler call.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
};

static void api_init(struct api* a, uint64_t comm_hash, int nranks, int rank) {
  int mask = 0;
  if (a->version == 4)
    a->v4->init(&a->ctx, &mask, "c4-driver", comm_hash, 2, nranks, rank, logger);
  else
    a->v5->init(&a->ctx, comm_hash, &mask, "c4-driver", 2, nranks, rank, logger);
}

static void* api_start(struct api* a, uint64_t type, void* parent, union c4DescrPayload* u) {
  void* h = NULL;
  if (a->version == 4) {
    c4EventDescr_v4 d;
    memset(&d, 0, sizeof(d));
    d.type = (uint8_t)type;
    d.parentObj = parent;
    d.rank = 0;
    d.u = *u;
    a->v4->startEvent(a->ctx, &h, &d);
  } else {
    c4EventDescr_v5 d;
    memset(&d, 0, sizeof(d));
    d.type = type;
    d.parentObj = parent;
    d.rank = 0;
    d.u = *u;
    a->v5->startEvent(a->ctx, &h, &d);
  }
  return h;
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
    /* PXN: this op was created by another process; its parent pointer is not ours */
    void* pxn = start_op(a, (void*)0x8, getpid() + 4242, 0, 2, 1, 1);
    void* pxn_step = start_step(a, pxn, 0);
    send_step_states(a, pxn_step, chunk);
    api_stop(a, pxn_step);
    api_stop(a, pxn);
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
  printf(",{\"peer\":2,\"channel\":0,\"dir\":\"send\",\"ops\":%d,\"steps\":%d,\"bytes\":%zu}]", iters, iters,
         (size_t)iters * chunk);
  printf(",\"warnings\":%d}\n", warnings);
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

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s ring LIB VERSION ITERS CHANNELS STEPS CHUNK | bench LIB VERSION OPS\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "driver: %s\n", dlerror());
    return 2;
  }
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
  else if (!strcmp(argv[1], "bench") && argc == 5)
    rc = bench(&a, atol(argv[4]));
  else {
    fprintf(stderr, "driver: bad arguments\n");
    rc = 2;
  }
  dlclose(lib);
  return rc;
}

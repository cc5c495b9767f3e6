/* A profiler plugin that does nothing: the baseline `c4 bench plugin` compares against. */
#include "nccl_profiler_api.h"

#define C4_EXPORT __attribute__((visibility("default")))

static int empty_ctx;

static ncclResult_t init_v5(void** context, uint64_t commId, int* mask, const char* name, int nNodes, int nranks,
                            int rank, ncclDebugLogger_t logfn) {
  (void)commId, (void)name, (void)nNodes, (void)nranks, (void)rank, (void)logfn;
  *context = &empty_ctx;
  *mask = c4ProfileColl | c4ProfileP2p | c4ProfileProxyOp | c4ProfileProxyStep;
  return C4_NCCL_SUCCESS;
}
static ncclResult_t start_v5(void* context, void** eHandle, c4EventDescr_v5* d) {
  (void)context, (void)d;
  *eHandle = &empty_ctx;
  return C4_NCCL_SUCCESS;
}
static ncclResult_t stop(void* eHandle) { (void)eHandle; return C4_NCCL_SUCCESS; }
static ncclResult_t record(void* eHandle, int state, c4EventStateArgs* args) {
  (void)eHandle, (void)state, (void)args;
  return C4_NCCL_SUCCESS;
}
static ncclResult_t finalize(void* context) { (void)context; return C4_NCCL_SUCCESS; }

C4_EXPORT c4Profiler_v5 ncclProfiler_v5 = {"C4-empty", init_v5, start_v5, stop, record, finalize};

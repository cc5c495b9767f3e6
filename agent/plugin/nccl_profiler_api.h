/*
 * The NCCL profiler plugin interface, versions 4, 5 and 6, declared from the layout
 * documented in NCCL's ext-profiler/README.md and its versioned API descriptions.
 * Only what C4 reads is named; every struct keeps the documented field order and
 * types so offsets match what NCCL passes. Written for C4, not copied from NCCL.
 */
#ifndef C4_NCCL_PROFILER_API_H
#define C4_NCCL_PROFILER_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef int ncclResult_t; /* ncclSuccess = 0 */
#define C4_NCCL_SUCCESS 0

/* NCCL's logger: level 2 = WARN, 3 = INFO; flags 1 = NCCL_INIT. */
typedef void (*ncclDebugLogger_t)(int level, unsigned long flags, const char* file, int line,
                                  const char* fmt, ...);
#define C4_NCCL_LOG_WARN 2
#define C4_NCCL_LOG_INFO 3
#define C4_NCCL_INIT_FLAG 1UL

/* Event type bits (eActivationMask and descriptor type). */
enum {
  c4ProfileGroup = 1 << 0,
  c4ProfileColl = 1 << 1,
  c4ProfileP2p = 1 << 2,
  c4ProfileProxyOp = 1 << 3,
  c4ProfileProxyStep = 1 << 4,
  c4ProfileProxyCtrl = 1 << 5,
  c4ProfileKernelCh = 1 << 6,
  c4ProfileNetPlugin = 1 << 7,
};

/* Event states (values are part of the ABI). */
enum {
  c4ProxyStepSendGPUWait = 8,   /* send: waiting for the GPU to produce the data */
  c4ProxyStepSendWait = 9,      /* send: posted to the network, waiting for completion */
  c4ProxyStepRecvWait = 10,     /* recv: posted, waiting for data from the network */
  c4ProxyStepRecvFlushWait = 11,/* recv: data arrived, flushing to the GPU */
  c4ProxyStepRecvGPUWait = 12,  /* recv: waiting for the GPU to consume */
  c4ProxyOpInProgress = 19,     /* v4+: proxy op in progress */
  c4ProxyStepSendPeerWait = 20, /* v4+: send: waiting for the receiver's credit */
  c4KernelChStop = 22,
};

/* Per-type payloads shared by v4, v5 and v6 (v5/v6 append fields, never reorder). */
struct c4CollDescr {
  uint64_t seqNumber;
  const char* func;
  void const* sendBuff;
  void* recvBuff;
  size_t count;
  int root;
  const char* datatype;
  uint8_t nChannels;
  uint8_t nWarps;
  const char* algo;
  const char* proto;
  void* parentGroup; /* v5+ only */
};

struct c4P2pDescr {
  const char* func;
  void* buff;
  const char* datatype;
  size_t count;
  int peer;
  uint8_t nChannels;
  void* parentGroup; /* v5+ only */
};

struct c4ProxyOpDescr {
  pid_t pid;         /* process that created the op; differs from ours under PXN */
  uint8_t channelId;
  int peer;
  int nSteps;
  int chunkSize;
  int isSend;
};

struct c4ProxyStepDescr {
  int step;
};

/* Largest union member across v4..v6 (v6 adds copy-engine payloads); we only read the above. */
union c4DescrPayload {
  struct c4CollDescr coll;
  struct c4P2pDescr p2p;
  struct c4ProxyOpDescr proxyOp;
  struct c4ProxyStepDescr proxyStep;
  unsigned char reserved[128];
};

/* v4: 8-bit type. */
typedef struct {
  uint8_t type;
  void* parentObj;
  int rank;
  union c4DescrPayload u;
} c4EventDescr_v4;

/* v5 and v6: 64-bit type, same offsets for parentObj, rank and the payload. */
typedef struct {
  uint64_t type;
  void* parentObj;
  int rank;
  union c4DescrPayload u;
} c4EventDescr_v5;

typedef union {
  struct { size_t transSize; } proxyStep;
  struct { int appendedProxyOps; } proxyCtrl;
  struct { void* data; } netPlugin;
  struct { uint64_t pTimer; } kernelCh;
} c4EventStateArgs;

typedef struct {
  const char* name;
  ncclResult_t (*init)(void** context, int* eActivationMask, const char* commName, uint64_t commHash,
                       int nNodes, int nranks, int rank, ncclDebugLogger_t logfn);
  ncclResult_t (*startEvent)(void* context, void** eHandle, c4EventDescr_v4* eDescr);
  ncclResult_t (*stopEvent)(void* eHandle);
  ncclResult_t (*recordEventState)(void* eHandle, int eState, c4EventStateArgs* eStateArgs);
  ncclResult_t (*finalize)(void* context);
} c4Profiler_v4;

/* v5 and v6 share this shape (v6 only widens the descriptor union). */
typedef struct {
  const char* name;
  ncclResult_t (*init)(void** context, uint64_t commId, int* eActivationMask, const char* commName,
                       int nNodes, int nranks, int rank, ncclDebugLogger_t logfn);
  ncclResult_t (*startEvent)(void* context, void** eHandle, c4EventDescr_v5* eDescr);
  ncclResult_t (*stopEvent)(void* eHandle);
  ncclResult_t (*recordEventState)(void* eHandle, int eState, c4EventStateArgs* eStateArgs);
  ncclResult_t (*finalize)(void* context);
} c4Profiler_v5;

/* v1, v2 and v3 (NCCL 2.23-2.26) share this table; C4 exports them only to say it needs v4+. */
typedef struct {
  const char* name;
  ncclResult_t (*init)(void** context, int* eActivationMask);
  ncclResult_t (*startEvent)(void* context, void** eHandle, void* eDescr);
  ncclResult_t (*stopEvent)(void* eHandle);
  ncclResult_t (*recordEventState)(void* eHandle, int eState, void* eStateArgs);
  ncclResult_t (*finalize)(void* context);
} c4ProfilerLegacy;

#endif

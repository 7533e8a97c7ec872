// CPU kernel emulator (see README.md): blocks run one after another; the
// threads of a block are fibers on this one OS thread (a ucontext stack each,
// entered once with swapcontext, then switched with _setjmp/_longjmp, which
// save no signal mask: no system call per switch), switched only at
// __syncthreads, __syncwarp, warp shuffles and wmma::mma_sync. A barrier opens when every thread of
// the block (or lane of the warp) that has not exited waits at it; threads
// waiting at different barriers that can never all open is a deadlock, which
// the emulator reports (as the GPU would hang).
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuda_runtime.h"
#include "strata/formats/dtype.h"
#include "strata/formats/error.h"

namespace strata::emu {

dim3 g_block_dim, g_grid_dim;

namespace {

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t ctx{};
  jmp_buf jb;
  bool started = false;
  std::vector<char> stack;
  ThreadState ts;
  State state = State::kRunnable;
  uint64_t exchange[2] = {0, 0};  // the value offered at a warp shuffle, by shuffle parity
  unsigned shuffles = 0;          // shuffles done in this block
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr int kWarp = 32;

ucontext_t g_scheduler;
jmp_buf g_scheduler_jb;
std::vector<Fiber> g_fibers;
int g_current = -1;
const std::function<void()>* g_body = nullptr;
std::vector<unsigned char> g_dynamic_shared;
cudaError_t g_last_error = cudaSuccess;
ThreadState g_host_state;  // threadIdx/blockIdx outside a kernel: zeros

void Entry() {
  (*g_body)();
  g_fibers[g_current].state = State::kDone;
  _longjmp(g_scheduler_jb, 1);
}

void Yield(State s) {
  Fiber& f = g_fibers[g_current];
  f.state = s;
  if (_setjmp(f.jb) == 0) _longjmp(g_scheduler_jb, 1);
}

// Runs fiber t until it yields or finishes.
void Resume(int t) {
  g_current = t;
  Fiber& f = g_fibers[t];
  if (_setjmp(g_scheduler_jb) == 0) {
    if (!f.started) {
      f.started = true;
      if (swapcontext(&g_scheduler, &f.ctx) != 0) std::abort();  // returns by _longjmp
    } else {
      _longjmp(f.jb, 1);
    }
  }
  g_current = -1;
}

[[noreturn]] void Deadlock(const char* why) {
  std::fprintf(stderr, "kernel emulator: %s\n", why);
  std::abort();
}

// Opens every barrier that can open; false when none could.
bool Release(int threads) {
  bool any = false;
  // Warp barriers: every lane of the warp waits at one.
  for (int w = 0; w * kWarp < threads; ++w) {
    const int lo = w * kWarp, hi = std::min(threads, lo + kWarp);
    bool all = true, some = false;
    for (int t = lo; t < hi; ++t) {
      all = all && g_fibers[t].state == State::kAtWarpBarrier;
      some = some || g_fibers[t].state == State::kAtWarpBarrier;
    }
    if (some && !all) {
      for (int t = lo; t < hi; ++t)
        if (g_fibers[t].state == State::kDone) Deadlock("a warp shuffle with a lane that has exited");
      continue;
    }
    if (all) {
      for (int t = lo; t < hi; ++t) g_fibers[t].state = State::kRunnable;
      any = true;
    }
  }
  if (any) return true;
  // The block barrier: every thread that has not exited waits at it.
  bool all = true, some = false;
  for (int t = 0; t < threads; ++t) {
    if (g_fibers[t].state == State::kDone) continue;
    all = all && g_fibers[t].state == State::kAtBlockBarrier;
    some = true;
  }
  if (some && all) {
    for (int t = 0; t < threads; ++t)
      if (g_fibers[t].state == State::kAtBlockBarrier) g_fibers[t].state = State::kRunnable;
    return true;
  }
  return false;
}

}  // namespace

ThreadState& Current() { return g_current >= 0 ? g_fibers[g_current].ts : g_host_state; }

void* DynamicShared() {  // 128-byte aligned, as the kernels declare it
  const uintptr_t p = reinterpret_cast<uintptr_t>(g_dynamic_shared.data());
  return reinterpret_cast<void*>((p + 127) / 128 * 128);
}

void SyncThreads() { Yield(State::kAtBlockBarrier); }

void WarpSync() { Yield(State::kAtWarpBarrier); }

int LaneId() { return g_current % kWarp; }

float* WarpScratch() {
  static std::vector<float> scratch(32 * 3 * 256);
  return scratch.data() + (g_current / kWarp) * 3 * 256;
}

// One barrier per shuffle: values alternate between two slots, and a lane
// can only overwrite a slot two shuffles later, after a barrier that every
// lane passes only once it has read that slot.
uint64_t WarpExchange(uint64_t v, int arg, bool is_xor) {
  const int me = g_current;
  const int lane = me % kWarp, base = me - lane;
  const int src = is_xor ? (lane ^ arg) : (arg & (kWarp - 1));
  const unsigned parity = g_fibers[me].shuffles++ & 1u;
  g_fibers[me].exchange[parity] = v;
  Yield(State::kAtWarpBarrier);  // every lane has offered its value
  return base + src < static_cast<int>(g_fibers.size()) ? g_fibers[base + src].exchange[parity] : v;
}

void RunGrid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  if (g_current >= 0) Deadlock("a kernel launched from a kernel");
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    g_last_error = cudaErrorInvalidValue;  // as a bad launch configuration
    return;
  }
  g_block_dim = block;
  g_grid_dim = grid;
  g_body = &body;
  g_fibers.resize(static_cast<size_t>(threads));
  for (Fiber& f : g_fibers)
    if (f.stack.empty()) f.stack.resize(kStackBytes);
  g_dynamic_shared.assign(smem + 128, 0xFF);  // uninitialized shared memory reads as NaN
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        for (int t = 0; t < threads; ++t) {
          Fiber& f = g_fibers[t];
          f.ts.block_idx = dim3(bx, by, bz);
          f.ts.thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          f.state = State::kRunnable;
          f.started = false;
          f.shuffles = 0;
          if (getcontext(&f.ctx) != 0) std::abort();
          f.ctx.uc_stack.ss_sp = f.stack.data();
          f.ctx.uc_stack.ss_size = f.stack.size();
          f.ctx.uc_link = &g_scheduler;
          makecontext(&f.ctx, Entry, 0);
        }
        for (;;) {
          bool ran = false;
          for (int t = 0; t < threads; ++t) {
            if (g_fibers[t].state != State::kRunnable) continue;
            Resume(t);
            ran = true;
          }
          bool done = true;
          for (int t = 0; t < threads; ++t) done = done && g_fibers[t].state == State::kDone;
          if (done) break;
          if (!Release(threads) && !ran) Deadlock("threads wait at barriers that cannot open (divergent __syncthreads?)");
        }
      }
  g_body = nullptr;
}

namespace {
bool g_capturing = false;
std::vector<std::function<void()>>* g_recording = nullptr;
}  // namespace

void Enqueue(std::function<void()> op) {
  if (g_capturing) g_recording->push_back(std::move(op));
  else op();
}

}  // namespace strata::emu

struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

__nv_bfloat16 __float2bfloat16_rn(float f) {
  __nv_bfloat16 b;
  strata::ConvertElements(strata::DType::kF32, &f, strata::DType::kBF16, &b.bits, 1);
  return b;
}

float __half2float(__half h) {
  float f = 0;
  strata::ConvertElements(strata::DType::kF16, &h.bits, strata::DType::kF32, &f, 1);
  return f;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = strata::emu::g_last_error;
  strata::emu::g_last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated launch failure"; }
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  // An H100/H200.
  *v = a == cudaDevAttrMultiProcessorCount ? 132 : a == cudaDevAttrComputeCapabilityMajor ? 9 : 227 * 1024;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "CPU kernel emulator");
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 132;
  p->totalGlobalMem = size_t{64} << 30;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = size_t{32} << 30;
  *total_bytes = size_t{64} << 30;
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
// Stream operations run at once in issue order (one stream, synchronous), or
// are recorded during a capture.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  strata::emu::Enqueue([=] { std::memcpy(dst, src, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  strata::emu::Enqueue([=] { std::memset(p, v, bytes); });
  return cudaSuccess;
}
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int v, size_t width, size_t height, cudaStream_t) {
  strata::emu::Enqueue([=] {
    for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(p) + r * pitch, v, width);
  });
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return strata::emu::g_capturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<char*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 1.0f;
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (strata::emu::g_capturing) return cudaErrorInvalidValue;
  strata::emu::g_capturing = true;
  strata::emu::g_recording = new std::vector<std::function<void()>>();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  if (!strata::emu::g_capturing) return cudaErrorInvalidValue;
  strata::emu::g_capturing = false;
  *g = new CUgraph_st{std::move(*strata::emu::g_recording)};
  delete strata::emu::g_recording;
  strata::emu::g_recording = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  *exec = new CUgraphExec_st{g->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t g, void*, size_t* count) {
  *count = g->ops.size();
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  for (const auto& op : exec->ops) strata::emu::Enqueue(op);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}

// ---------------------------------------------------------------- cuBLAS
namespace {
float LoadAs(const void* p, cudaDataType_t t, size_t i) {
  float f = 0;
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16F:
      strata::ConvertElements(strata::DType::kF16, static_cast<const uint16_t*>(p) + i, strata::DType::kF32, &f, 1);
      return f;
    default:
      strata::ConvertElements(strata::DType::kBF16, static_cast<const uint16_t*>(p) + i, strata::DType::kF32, &f, 1);
      return f;
  }
}
}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = reinterpret_cast<cublasHandle_t>(new char);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete reinterpret_cast<char*>(h);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasGetStatusName(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_EMULATED"; }
const char* cublasGetStatusString(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS ? "success" : "emulated failure"; }
// Column-major C (m x n, ldc) = alpha op(A) op(B) + beta C, fp32 C, double
// accumulation (the emulator's GEMM is a reference, not a copy of cuBLAS).
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType_t at, int lda, const void* B,
                            cudaDataType_t bt, int ldb, const void* beta, void* C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t, cublasGemmAlgo_t) {
  if (ct != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  strata::emu::Enqueue([=] {
    float* c = static_cast<float*>(C);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double s = 0;
        for (int l = 0; l < k; ++l) {
          const float a = ta == CUBLAS_OP_T ? LoadAs(A, at, static_cast<size_t>(l) + static_cast<size_t>(i) * lda)
                                            : LoadAs(A, at, static_cast<size_t>(i) + static_cast<size_t>(l) * lda);
          const float b = tb == CUBLAS_OP_T ? LoadAs(B, bt, static_cast<size_t>(j) + static_cast<size_t>(l) * ldb)
                                            : LoadAs(B, bt, static_cast<size_t>(l) + static_cast<size_t>(j) * ldb);
          s += static_cast<double>(a) * b;
        }
        float& out = c[static_cast<size_t>(i) + static_cast<size_t>(j) * ldc];
        out = static_cast<float>(al * s + (be != 0.0f ? be * out : 0.0f));
      }
  });
  return CUBLAS_STATUS_SUCCESS;
}


namespace strata::cuda {
// membw.cu measures real HBM; the emulator has none to measure.
double ReadBandwidth(uint64_t, int) { throw Error("the CPU kernel emulator has no device memory bandwidth to measure"); }
}  // namespace strata::cuda

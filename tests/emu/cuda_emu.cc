// CPU kernel emulator (see README.md): blocks run one after another; the
// threads of a block are fibers on this one OS thread (a ucontext stack each,
// entered once with swapcontext, then switched with _setjmp/_longjmp, which
// save no signal mask: no system call per switch), switched only at
// __syncthreads, __syncwarp, warp shuffles and wmma::mma_sync. A barrier opens when every thread of
// the block (or lane of the warp) that has not exited waits at it; threads
// waiting at different barriers that can never all open is a deadlock, which
// the emulator reports (as the GPU would hang). The schedule orders the blocks
// and, between barriers, the threads; shared memory is poisoned before each block.
#include <cxxabi.h>
#include <dlfcn.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
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
std::map<const char*, size_t> g_allocations;       // cudaMalloc'd: what a schedule comparison snapshots
std::map<const void*, int> g_max_dynamic_shared;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)

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

// ------------------------------------------------ schedules

struct Schedule {
  enum Kind { kForward, kReverse, kShuffle } kind = kForward;
  uint64_t seed = 0;
};
std::string g_schedule_spec;
std::vector<Schedule> g_schedules;

[[noreturn]] void BadSchedule(const std::string& spec) {
  std::fprintf(stderr,
               "kernel emulator: schedule \"%s\" is not forward, reverse, shuffle:SEED, all, or a comma-separated "
               "list of those (STRATA_EMU_SCHEDULE, tests/emu/README.md)\n",
               spec.c_str());
  std::abort();
}

Schedule ParseOne(const std::string& s, const std::string& spec) {
  if (s == "forward") return {Schedule::kForward, 0};
  if (s == "reverse") return {Schedule::kReverse, 0};
  if (s.rfind("shuffle:", 0) == 0 && s.size() > 8) {
    char* end = nullptr;
    const unsigned long long seed = std::strtoull(s.c_str() + 8, &end, 10);
    if (*end == '\0') return {Schedule::kShuffle, seed};
  }
  BadSchedule(spec);
}

const std::vector<Schedule>& Schedules() {
  if (g_schedules.empty()) {
    const char* env = std::getenv("STRATA_EMU_SCHEDULE");
    SetSchedule(env && *env ? env : "forward");
  }
  return g_schedules;
}

std::string Name(const Schedule& s) {
  return s.kind == Schedule::kForward ? "forward" : s.kind == Schedule::kReverse ? "reverse" : "shuffle:" + std::to_string(s.seed);
}

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The order in which to visit 0..n-1. `salt` names the place (the grid's
// blocks, or one round of one block), so that a shuffle depends only on the
// seed and the launch shape, never on what ran before: a failing test
// reproduces on its own.
void Order(const Schedule& s, uint64_t salt, int n, std::vector<int>* order) {
  order->resize(static_cast<size_t>(n));
  std::iota(order->begin(), order->end(), 0);
  if (s.kind == Schedule::kReverse) std::reverse(order->begin(), order->end());
  if (s.kind != Schedule::kShuffle) return;
  uint64_t state = Mix(s.seed ^ Mix(salt));
  for (int i = n - 1; i > 0; --i) {  // Fisher-Yates
    state = Mix(state);
    std::swap((*order)[static_cast<size_t>(i)], (*order)[state % static_cast<uint64_t>(i + 1)]);
  }
}

// ------------------------------------------------ messages

// "NAME at gpu_emu_test+0x1234", or "kernel at ..." for one with no dynamic
// symbol (an anonymous namespace): addr2line -Cfe gpu_emu_test 0x1234 names it.
std::string KernelName(const void* kernel) {
  Dl_info info{};
  if (dladdr(kernel, &info) == 0) return "a kernel";
  char where[64];
  std::snprintf(where, sizeof where, "+0x%zx",
                static_cast<size_t>(static_cast<const char*>(kernel) - static_cast<const char*>(info.dli_fbase)));
  std::string name = "kernel at ";
  if (info.dli_sname) {
    int st = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &st);
    name = std::string(st == 0 && d ? d : info.dli_sname) + " at ";
    std::free(d);
  }
  const char* file = info.dli_fname ? std::strrchr(info.dli_fname, '/') : nullptr;
  return name + (file ? file + 1 : "?") + where;
}

}  // namespace

void SetSchedule(const std::string& spec) {
  const std::string list = spec == "all" ? "forward,reverse,shuffle:1,shuffle:2" : spec;
  std::vector<Schedule> parsed;
  size_t at = 0;
  for (;;) {
    const size_t comma = list.find(',', at);
    parsed.push_back(ParseOne(list.substr(at, comma == std::string::npos ? std::string::npos : comma - at), spec));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  g_schedules = std::move(parsed);
  g_schedule_spec = spec;
}

const std::string& ScheduleSpec() {
  Schedules();
  return g_schedule_spec;
}

cudaError_t SetMaxDynamicShared(const void* kernel, int bytes) {
  int optin = 0;
  (void)cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
  if (bytes < 0 || bytes > optin) return cudaErrorInvalidValue;
  g_max_dynamic_shared[kernel] = bytes;
  return cudaSuccess;
}

namespace {
// ------------------------------------------------ one block, one grid

// Static __shared__ variables (cuda_runtime.h puts them in this section; the
// linker names its bounds) and dynamic shared memory read as 0xFF bytes until
// a block writes them: NaN as float or double, -1 as an integer.
extern "C" char __start_strata_emu_shared[] __attribute__((weak));
extern "C" char __stop_strata_emu_shared[] __attribute__((weak));
constexpr unsigned char kPoison = 0xFF;

void PoisonShared(size_t smem) {
  if (__start_strata_emu_shared != nullptr)
    std::memset(__start_strata_emu_shared, kPoison, static_cast<size_t>(__stop_strata_emu_shared - __start_strata_emu_shared));
  std::memset(DynamicShared(), kPoison, smem);
}

void RunBlock(const Schedule& s, dim3 block, dim3 block_idx, uint64_t block_linear, size_t smem) {
  const int threads = static_cast<int>(g_fibers.size());
  PoisonShared(smem);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = g_fibers[t];
    f.ts.block_idx = block_idx;
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
  std::vector<int> order;
  for (uint64_t round = 0;; ++round) {
    // Between barriers each runnable thread runs to its next barrier, in the
    // schedule's order: a missing barrier lets some order read a stale value.
    if (s.kind == Schedule::kShuffle || round == 0) Order(s, (block_linear << 24) ^ round, threads, &order);
    bool ran = false;
    for (const int t : order) {
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

void RunBlocks(const Schedule& s, dim3 grid, dim3 block, size_t smem) {
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  std::vector<int> order;
  if (s.kind == Schedule::kForward) {
    for (uint64_t b = 0; b < blocks; ++b) RunBlock(s, block, dim3(b % grid.x, b / grid.x % grid.y, b / (uint64_t{grid.x} * grid.y)), b, smem);
    return;
  }
  Order(s, ~uint64_t{0} ^ blocks, static_cast<int>(blocks), &order);
  for (const int bi : order) {
    const uint64_t b = static_cast<uint64_t>(bi);
    RunBlock(s, block, dim3(b % grid.x, b / grid.x % grid.y, b / (uint64_t{grid.x} * grid.y)), b, smem);
  }
}

using Snapshot = std::vector<std::vector<char>>;  // the bytes of g_allocations, in its order

Snapshot TakeSnapshot() {
  Snapshot snap;
  snap.reserve(g_allocations.size());
  for (const auto& [p, n] : g_allocations) snap.emplace_back(p, p + n);
  return snap;
}

void RestoreSnapshot(const Snapshot& snap) {
  size_t i = 0;
  for (const auto& [p, n] : g_allocations) std::memcpy(const_cast<char*>(p), snap[i++].data(), n);
}

// Aborts, naming the first differing byte, unless device memory equals `want`.
void ExpectSnapshot(const Snapshot& want, const void* kernel, const Schedule& first, const Schedule& now) {
  size_t i = 0;
  for (const auto& [p, n] : g_allocations) {
    const std::vector<char>& w = want[i++];
    if (std::memcmp(p, w.data(), n) == 0) continue;
    size_t at = 0;
    while (p[at] == w[at]) ++at;
    at &= ~size_t{3};
    uint32_t a = 0, b = 0;
    std::memcpy(&a, w.data() + at, std::min<size_t>(4, n - at));
    std::memcpy(&b, p + at, std::min<size_t>(4, n - at));
    std::fprintf(stderr,
                 "kernel emulator: %s leaves different device memory under schedule %s than under %s: "
                 "allocation %p (%zu bytes), byte %zu: 0x%08x (%g as float) versus 0x%08x (%g); "
                 "a missing __syncthreads/__syncwarp, or a result that depends on thread order\n",
                 KernelName(kernel).c_str(), Name(now).c_str(), Name(first).c_str(), static_cast<const void*>(p), n, at, b,
                 static_cast<double>(Bits<float>(b)), a, static_cast<double>(Bits<float>(a)));
    std::abort();
  }
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

void RunGrid(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  if (g_current >= 0) Deadlock("a kernel launched from a kernel");
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads <= 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || block.z > 64 ||
      grid.y > 65535 || grid.z > 65535) {
    g_last_error = cudaErrorInvalidValue;  // as a bad launch configuration
    return;
  }
  // Above 48 KiB a kernel must opt in with cudaFuncSetAttribute, as on the GPU.
  const auto opt = g_max_dynamic_shared.find(kernel);
  const size_t allowed = opt != g_max_dynamic_shared.end() ? static_cast<size_t>(opt->second) : 48 * 1024;
  if (smem > allowed) {
    std::fprintf(stderr, "kernel emulator: %s launched with %zu bytes of dynamic shared memory, %zu allowed "
                 "(cudaFuncSetAttribute cudaFuncAttributeMaxDynamicSharedMemorySize)\n", KernelName(kernel).c_str(), smem, allowed);
    g_last_error = cudaErrorInvalidValue;
    return;
  }
  g_block_dim = block;
  g_grid_dim = grid;
  g_body = &body;
  g_fibers.resize(static_cast<size_t>(threads));
  for (Fiber& f : g_fibers)
    if (f.stack.empty()) f.stack.resize(kStackBytes);
  g_dynamic_shared.resize(smem + 128);
  const std::vector<Schedule>& schedules = Schedules();
  if (schedules.size() == 1) {
    RunBlocks(schedules[0], grid, block, smem);
  } else {  // every schedule from the same memory, to the same bytes
    const Snapshot before = TakeSnapshot();
    RunBlocks(schedules[0], grid, block, smem);
    const Snapshot after = TakeSnapshot();
    for (size_t i = 1; i < schedules.size(); ++i) {
      RestoreSnapshot(before);
      RunBlocks(schedules[i], grid, block, smem);
      ExpectSnapshot(after, kernel, schedules[0], schedules[i]);
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
  const size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  *p = std::aligned_alloc(256, rounded);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  strata::emu::g_allocations[static_cast<const char*>(*p)] = rounded;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  strata::emu::g_allocations.erase(static_cast<const char*>(p));
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
// The emulated device is an NVIDIA H200 SXM (GH100, compute capability 9.0,
// 141 GB HBM3e). Sources, by the letter after each value:
//  [G] CUDA C++ Programming Guide, "Features and Technical Specifications",
//      table "Technical Specifications per Compute Capability", column 9.0 (the
//      same per-SM limits the CUDA occupancy calculator uses for sm_90).
//  [W] NVIDIA H100 Tensor Core GPU Architecture whitepaper (GH100): 132 SMs on
//      the SXM5 part, 50 MB L2, 228 KB shared memory per SM (227 KB usable per block).
//  [D] NVIDIA H200 Tensor Core GPU datasheet: 141 GB HBM3e at 4.8 TB/s, SXM5;
//      six 1024-bit HBM3e stacks make the 6144-bit bus.
//  [Q] what the CUDA runtime reports on an H100/H200 SXM (deviceQuery,
//      nvidia-smi -q "Max Clocks"): 1980 MHz SM boost clock, 3201 MHz HBM3e
//      clock (x2 data rate x 6144 bits / 8 = 4.9 TB/s, the datasheet's 4.8),
//      3 async copy engines; capability flags every Hopper SXM board reports.
// The emulator answers nothing else: a backend that asks for an attribute
// missing here aborts the test (add the real value, with its source, first).
namespace {
struct DeviceAttribute {
  cudaDeviceAttr attr;
  const char* name;
  int value;
};
constexpr DeviceAttribute kH200[] = {
    {cudaDevAttrMaxThreadsPerBlock, "MaxThreadsPerBlock", 1024},                         // [G]
    {cudaDevAttrMaxBlockDimX, "MaxBlockDimX", 1024},                                     // [G]
    {cudaDevAttrMaxBlockDimY, "MaxBlockDimY", 1024},                                     // [G]
    {cudaDevAttrMaxBlockDimZ, "MaxBlockDimZ", 64},                                       // [G]
    {cudaDevAttrMaxGridDimX, "MaxGridDimX", 2147483647},                                 // [G] 2^31-1
    {cudaDevAttrMaxGridDimY, "MaxGridDimY", 65535},                                      // [G]
    {cudaDevAttrMaxGridDimZ, "MaxGridDimZ", 65535},                                      // [G]
    {cudaDevAttrMaxSharedMemoryPerBlock, "MaxSharedMemoryPerBlock", 48 * 1024},          // [G] without opt-in
    {cudaDevAttrTotalConstantMemory, "TotalConstantMemory", 64 * 1024},                  // [G]
    {cudaDevAttrWarpSize, "WarpSize", 32},                                               // [G]
    {cudaDevAttrMaxRegistersPerBlock, "MaxRegistersPerBlock", 64 * 1024},                // [G] 32-bit registers
    {cudaDevAttrClockRate, "ClockRate", 1980000},                                        // [Q] kHz
    {cudaDevAttrMultiProcessorCount, "MultiProcessorCount", 132},                        // [W] SXM5
    {cudaDevAttrIntegrated, "Integrated", 0},                                            // discrete board
    {cudaDevAttrCanMapHostMemory, "CanMapHostMemory", 1},                                // [Q]
    {cudaDevAttrConcurrentKernels, "ConcurrentKernels", 1},                              // [G] 128 resident grids
    {cudaDevAttrEccEnabled, "EccEnabled", 1},                                            // [D] HBM3e ECC on
    {cudaDevAttrMemoryClockRate, "MemoryClockRate", 3201000},                            // [Q] kHz
    {cudaDevAttrGlobalMemoryBusWidth, "GlobalMemoryBusWidth", 6144},                     // [D] bits
    {cudaDevAttrL2CacheSize, "L2CacheSize", 50 * 1024 * 1024},                           // [W]
    {cudaDevAttrMaxThreadsPerMultiProcessor, "MaxThreadsPerMultiProcessor", 2048},       // [G]
    {cudaDevAttrAsyncEngineCount, "AsyncEngineCount", 3},                                // [Q]
    {cudaDevAttrUnifiedAddressing, "UnifiedAddressing", 1},                              // [Q] 64-bit Linux
    {cudaDevAttrComputeCapabilityMajor, "ComputeCapabilityMajor", 9},                    // [G] sm_90
    {cudaDevAttrComputeCapabilityMinor, "ComputeCapabilityMinor", 0},                    // [G]
    {cudaDevAttrMaxSharedMemoryPerMultiprocessor, "MaxSharedMemoryPerMultiprocessor", 228 * 1024},  // [G][W]
    {cudaDevAttrMaxRegistersPerMultiprocessor, "MaxRegistersPerMultiprocessor", 64 * 1024},         // [G]
    {cudaDevAttrManagedMemory, "ManagedMemory", 1},                                      // [Q]
    {cudaDevAttrCooperativeLaunch, "CooperativeLaunch", 1},                              // [Q]
    {cudaDevAttrMaxSharedMemoryPerBlockOptin, "MaxSharedMemoryPerBlockOptin", 227 * 1024},  // [G][W]
    {cudaDevAttrMaxBlocksPerMultiprocessor, "MaxBlocksPerMultiprocessor", 32},           // [G]
    {cudaDevAttrReservedSharedMemoryPerBlock, "ReservedSharedMemoryPerBlock", 1024},     // [G] 1 KB per block
};

int H200(cudaDeviceAttr a) {
  for (const DeviceAttribute& d : kH200)
    if (d.attr == a) return d.value;
  std::fprintf(stderr,
               "kernel emulator: cudaDeviceGetAttribute(%d) is not in the emulator's H200 table "
               "(tests/emu/cuda_emu.cc): add its real value, with its source, rather than let the emulator make one up\n",
               static_cast<int>(a));
  std::abort();
}
}  // namespace

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int dev) {
  if (dev != 0) return cudaErrorInvalidDevice;
  *v = H200(a);
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
// The emulator's memory is the host's (cudaMalloc is aligned_alloc), so the
// totals are not the H200's 141 GB: 64 GiB total and 32 GiB free, a budget
// the backend's sizing works with and no test comes near (README.md).
constexpr size_t kEmulatedTotalBytes = size_t{64} << 30, kEmulatedFreeBytes = size_t{32} << 30;

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (dev != 0) return cudaErrorInvalidDevice;
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "NVIDIA H200 (CPU kernel emulator)");
  p->totalGlobalMem = kEmulatedTotalBytes;
  p->sharedMemPerBlock = static_cast<size_t>(H200(cudaDevAttrMaxSharedMemoryPerBlock));
  p->totalConstMem = static_cast<size_t>(H200(cudaDevAttrTotalConstantMemory));
  p->sharedMemPerMultiprocessor = static_cast<size_t>(H200(cudaDevAttrMaxSharedMemoryPerMultiprocessor));
  p->sharedMemPerBlockOptin = static_cast<size_t>(H200(cudaDevAttrMaxSharedMemoryPerBlockOptin));
  p->reservedSharedMemPerBlock = static_cast<size_t>(H200(cudaDevAttrReservedSharedMemoryPerBlock));
  p->regsPerBlock = H200(cudaDevAttrMaxRegistersPerBlock);
  p->warpSize = H200(cudaDevAttrWarpSize);
  p->maxThreadsPerBlock = H200(cudaDevAttrMaxThreadsPerBlock);
  p->maxThreadsDim[0] = H200(cudaDevAttrMaxBlockDimX);
  p->maxThreadsDim[1] = H200(cudaDevAttrMaxBlockDimY);
  p->maxThreadsDim[2] = H200(cudaDevAttrMaxBlockDimZ);
  p->maxGridSize[0] = H200(cudaDevAttrMaxGridDimX);
  p->maxGridSize[1] = H200(cudaDevAttrMaxGridDimY);
  p->maxGridSize[2] = H200(cudaDevAttrMaxGridDimZ);
  p->clockRate = H200(cudaDevAttrClockRate);
  p->major = H200(cudaDevAttrComputeCapabilityMajor);
  p->minor = H200(cudaDevAttrComputeCapabilityMinor);
  p->multiProcessorCount = H200(cudaDevAttrMultiProcessorCount);
  p->integrated = H200(cudaDevAttrIntegrated);
  p->canMapHostMemory = H200(cudaDevAttrCanMapHostMemory);
  p->concurrentKernels = H200(cudaDevAttrConcurrentKernels);
  p->ECCEnabled = H200(cudaDevAttrEccEnabled);
  p->asyncEngineCount = H200(cudaDevAttrAsyncEngineCount);
  p->unifiedAddressing = H200(cudaDevAttrUnifiedAddressing);
  p->memoryClockRate = H200(cudaDevAttrMemoryClockRate);
  p->memoryBusWidth = H200(cudaDevAttrGlobalMemoryBusWidth);
  p->l2CacheSize = H200(cudaDevAttrL2CacheSize);
  p->maxThreadsPerMultiProcessor = H200(cudaDevAttrMaxThreadsPerMultiProcessor);
  p->regsPerMultiprocessor = H200(cudaDevAttrMaxRegistersPerMultiprocessor);
  p->managedMemory = H200(cudaDevAttrManagedMemory);
  p->cooperativeLaunch = H200(cudaDevAttrCooperativeLaunch);
  p->maxBlocksPerMultiProcessor = H200(cudaDevAttrMaxBlocksPerMultiprocessor);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = kEmulatedFreeBytes;
  *total_bytes = kEmulatedTotalBytes;
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

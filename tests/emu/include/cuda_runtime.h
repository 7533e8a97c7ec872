// CPU kernel emulator (tests/emu/README.md): the subset of the CUDA runtime
// and device built-ins that the emulated kernels use, for a plain C++
// compiler. Found before the real <cuda_runtime.h> only by the emulator's
// test target; STRATA_CUDA_EMU is defined there.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>

#ifndef STRATA_CUDA_EMU
#error "tests/emu/include is for the kernel emulator only (STRATA_CUDA_EMU)"
#endif

// ---------------------------------------------------------------- keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time, so a block's __shared__ variables are statics; all of
// them sit in one linker section, which the emulator poisons before each block.
#define __shared__ __attribute__((section("strata_emu_shared"))) static
#define __align__(n) alignas(n)
// (__restrict__ is a GNU keyword already.)

// ---------------------------------------------------------------- types
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 { uint32_t x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }

using cudaStream_t = struct CUstream_st*;
using cudaEvent_t = struct CUevent_st*;
using cudaGraph_t = struct CUgraph_st*;
using cudaGraphExec_t = struct CUgraphExec_st*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorStreamCaptureUnsupported = 900,
};
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed };
inline constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2, cudaHostAllocDefault = 0;
// The fields the emulator answers (cuda_emu.cc fills them from its H200
// table); a backend that reads any other field does not compile here.
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem, sharedMemPerBlock, totalConstMem, sharedMemPerMultiprocessor, sharedMemPerBlockOptin,
      reservedSharedMemPerBlock;
  int regsPerBlock, warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3], clockRate, major, minor,
      multiProcessorCount, integrated, canMapHostMemory, concurrentKernels, ECCEnabled, asyncEngineCount,
      unifiedAddressing, memoryClockRate, memoryBusWidth, l2CacheSize, maxThreadsPerMultiProcessor,
      regsPerMultiprocessor, managedMemory, cooperativeLaunch, maxBlocksPerMultiProcessor;
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
// The CUDA runtime's numbering (driver_types.h). Only attributes in the
// emulator's H200 table are named here; cudaDeviceGetAttribute aborts on any other.
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxBlockDimX = 2,
  cudaDevAttrMaxBlockDimY = 3,
  cudaDevAttrMaxBlockDimZ = 4,
  cudaDevAttrMaxGridDimX = 5,
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrTotalConstantMemory = 9,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMaxRegistersPerBlock = 12,
  cudaDevAttrClockRate = 13,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrIntegrated = 18,
  cudaDevAttrCanMapHostMemory = 19,
  cudaDevAttrConcurrentKernels = 31,
  cudaDevAttrEccEnabled = 32,
  cudaDevAttrMemoryClockRate = 36,
  cudaDevAttrGlobalMemoryBusWidth = 37,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrMaxThreadsPerMultiProcessor = 39,
  cudaDevAttrAsyncEngineCount = 40,
  cudaDevAttrUnifiedAddressing = 41,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxRegistersPerMultiprocessor = 82,
  cudaDevAttrManagedMemory = 83,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMaxBlocksPerMultiprocessor = 106,
  cudaDevAttrReservedSharedMemoryPerBlock = 111,
};

namespace strata::emu {

struct ThreadState {
  dim3 thread_idx, block_idx;
};
ThreadState& Current();
extern dim3 g_block_dim, g_grid_dim;
void* DynamicShared();
void SyncThreads();
// The value of `v` in lane `src` of the calling warp (all 32 lanes must call).
uint64_t WarpExchange(uint64_t v, int src_lane_or_xor, bool is_xor);
// Runs `body` as every thread of every block of `kernel` (named in
// messages): blocks one after another, the threads of a block as cooperative
// fibers switching at barriers, in the order the schedule says.
void RunGrid(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);
// Sets the schedule of every later launch (README.md, "Schedules"): "forward",
// "reverse", "shuffle:SEED", or several of them comma-separated ("all" is
// forward,reverse,shuffle:1,shuffle:2), where each launch runs once per
// schedule from the same device memory and must leave it bit-identical.
// Without a call, STRATA_EMU_SCHEDULE says, else "forward". Aborts on a bad spec.
void SetSchedule(const std::string& spec);
const std::string& ScheduleSpec();  // the schedule in force, as given
// Dynamic shared memory `kernel` may launch with (cudaFuncSetAttribute).
cudaError_t SetMaxDynamicShared(const void* kernel, int bytes);
void SetLastError(cudaError_t e);
cudaError_t TakeLastError();

// Runs `op` now, or records it when a stream capture is under way (then a
// graph launch runs the recorded operations in order).
void Enqueue(std::function<void()> op);

template <typename... P>
struct Launcher {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  template <typename... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel argument count");
    // Arguments by value, as a launch (and a captured graph node) keeps them.
    Enqueue([k = kernel, g = grid, b = block, sm = smem, args = std::tuple<std::decay_t<P>...>(static_cast<P>(a)...)] {
      std::function<void()> body = [&] { std::apply(k, args); };
      RunGrid(reinterpret_cast<const void*>(k), g, b, sm, body);
    });
  }
};
template <typename... P>
Launcher<P...> Launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t) {
  return Launcher<P...>{kernel, grid, block, smem};
}

template <typename T>
T Bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename T>
uint64_t ToBits(T v) {
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

}  // namespace strata::emu

#define threadIdx (::strata::emu::Current().thread_idx)
#define blockIdx (::strata::emu::Current().block_idx)
#define blockDim (::strata::emu::g_block_dim)
#define gridDim (::strata::emu::g_grid_dim)

// ---------------------------------------------------------------- device built-ins
inline void __syncthreads() { ::strata::emu::SyncThreads(); }
namespace strata::emu {
void WarpSync();
}
inline void __syncwarp(unsigned = 0xffffffffu) { ::strata::emu::WarpSync(); }
inline uint4 make_uint4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return {a, b, c, d}; }
inline void __trap() { __builtin_trap(); }
inline void __threadfence() {}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  return ::strata::emu::Bits<T>(::strata::emu::WarpExchange(::strata::emu::ToBits(v), mask, true));
}
template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  return ::strata::emu::Bits<T>(::strata::emu::WarpExchange(::strata::emu::ToBits(v), src, false));
}
template <typename T>
T __ldg(const T* p) { return *p; }
template <typename T>
T __ldcg(const T* p) { return *p; }
template <typename T>
T __ldcs(const T* p) { return *p; }
inline unsigned atomicAdd(unsigned* p, unsigned v) {  // fibers: one at a time
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline float __uint_as_float(uint32_t u) { return ::strata::emu::Bits<float>(u); }
inline uint32_t __float_as_uint(float f) { return static_cast<uint32_t>(::strata::emu::ToBits(f)); }
inline double __longlong_as_double(long long v) { return ::strata::emu::Bits<double>(static_cast<uint64_t>(v)); }
inline long long __double_as_longlong(double d) { return static_cast<long long>(::strata::emu::ToBits(d)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
// expf, fmaxf, sqrtf, sincos(double, double*, double*): glibc's.

// ---------------------------------------------------------------- runtime API
cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(p), bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
const char* cudaGetErrorName(cudaError_t);
const char* cudaGetErrorString(cudaError_t);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int dev);
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute a, int v) {
  return a == cudaFuncAttributeMaxDynamicSharedMemorySize
             ? ::strata::emu::SetMaxDynamicShared(reinterpret_cast<const void*>(kernel), v)
             : cudaErrorInvalidValue;
}
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
template <typename T>
cudaError_t cudaHostAlloc(T** p, size_t bytes, unsigned flags) { return cudaHostAlloc(reinterpret_cast<void**>(p), bytes, flags); }
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t);
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t);
cudaError_t cudaMemset2DAsync(void* p, size_t pitch, int v, size_t width, size_t height, cudaStream_t);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t cudaGraphGetNodes(cudaGraph_t g, void* nodes, size_t* count);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

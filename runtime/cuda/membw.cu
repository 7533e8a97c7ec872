// The device read bandwidth behind MeasureDeviceReadBandwidth
// (strata/cuda/cuda_backend.h): the HBM read bound.
// A grid-stride kernel reads the buffer with 16-byte loads, four in flight per
// thread, and folds them into one XOR per block (stored, so nothing is
// optimized away); the best of several CUDA-event-timed runs is reported.
#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "device_memory.h"
#include "kernel_common.cuh"
#include "membw.cuh"

namespace strata::cuda {

namespace {

constexpr int kThreads = 512;

__global__ void __launch_bounds__(kThreads) ReadKernel(const uint4* __restrict__ p, int64_t n, uint32_t* out) {
  uint32_t acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
                d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  acc = __reduce_xor_sync(0xffffffffu, acc);
  if (threadIdx.x % kWarp == 0) atomicXor(out, acc);
}

struct Event {
  cudaEvent_t e = nullptr;
  Event() { CUDA_CHECK(cudaEventCreate(&e)); }
  ~Event() {
    if (e) (void)cudaEventDestroy(e);
  }
};

}  // namespace

double ReadBandwidth(uint64_t bytes, int reps) {
  if (bytes < (uint64_t{1} << 20) || reps < 1) throw Error("read bandwidth: measure at least 1 MiB, at least once");
  bytes = bytes / 16 * 16;
  int dev = 0, sms = 1;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  DeviceBuffer buf(bytes, "the read-bandwidth buffer");
  DeviceBuffer sink(sizeof(uint32_t), "the read-bandwidth checksum");
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  double best = 0;
  try {
    CUDA_CHECK(cudaMemsetAsync(buf.get(), 0x5A, bytes, s));
    Event start, stop;
    const int64_t n = static_cast<int64_t>(bytes / 16);
    // Four resident blocks of 512 threads per multiprocessor (2048 threads).
    const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(4 * sms, CeilDiv(n, kThreads))));
    for (int r = 0; r <= reps; ++r) {  // run 0 warms up
      CUDA_CHECK(cudaEventRecord(start.e, s));
      ReadKernel<<<blocks, kThreads, 0, s>>>(buf.as<uint4>(), n, sink.as<uint32_t>());
      CUDA_CHECK_LAUNCH("ReadKernel");
      CUDA_CHECK(cudaEventRecord(stop.e, s));
      CUDA_CHECK(cudaEventSynchronize(stop.e));
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start.e, stop.e));
      if (r > 0 && ms > 0) best = std::max(best, static_cast<double>(bytes) / (ms * 1e-3));
    }
  } catch (...) {
    (void)cudaStreamSynchronize(s);
    (void)cudaStreamDestroy(s);
    throw;
  }
  CUDA_CHECK(cudaStreamDestroy(s));
  return best;
}

}  // namespace strata::cuda

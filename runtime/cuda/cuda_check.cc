// CUDA errors as strata::Error, and the device allocator's counts.
#include "cuda_check.h"

#include <atomic>
#include <string>

#include "device_memory.h"

namespace strata::cuda {

namespace {

std::string Where(const char* stmt, const char* file, int line) {
  std::string f = file;
  if (auto p = f.find("runtime/cuda/"); p != std::string::npos) f = f.substr(p);
  return std::string(" in `") + stmt + "` at " + f + ":" + std::to_string(line);
}

std::atomic<uint64_t> g_current{0}, g_peak{0};

}  // namespace

void ThrowCudaError(cudaError_t err, const char* stmt, const char* file, int line) {
  (void)cudaGetLastError();  // clear a sticky launch error so later calls report their own
  std::string msg = std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")" +
                    Where(stmt, file, line);
  if (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice)
    msg += "; no usable CUDA device (run with --device cpu)";
  throw Error(msg);
}

std::string WhereIs(const char* stmt, const char* file, int line) { return Where(stmt, file, line); }

void* DeviceMalloc(size_t bytes, const char* what) {
  void* p = nullptr;
  if (bytes == 0) bytes = 1;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    throw Error("cannot allocate " + std::to_string(bytes) + " bytes of device memory for " + what + " (" +
                cudaGetErrorString(err) + "; " + std::to_string(free_b) + " of " + std::to_string(total_b) +
                " bytes free); use a smaller context or --device cpu");
  }
  const uint64_t now = g_current += bytes;
  uint64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void DeviceFree(void* p, size_t bytes) {
  if (!p) return;
  (void)cudaFree(p);  // never throws: called from destructors
  g_current -= bytes == 0 ? 1 : bytes;
}

uint64_t DeviceBytesInUse() { return g_current.load(); }
uint64_t DeviceBytesPeak() { return g_peak.load(); }
void ResetDeviceBytesPeak() { g_peak.store(g_current.load()); }

}  // namespace strata::cuda

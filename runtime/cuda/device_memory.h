// Device allocations through one counted allocator (cudaMalloc underneath), so
// the backend can report its own VRAM use independently of the driver's view.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace strata::cuda {

// Throws Error naming `what`, the size and the free memory when it fails.
void* DeviceMalloc(size_t bytes, const char* what);
// `bytes` as given to DeviceMalloc. Never throws.
void DeviceFree(void* p, size_t bytes);
uint64_t DeviceBytesInUse();
uint64_t DeviceBytesPeak();
void ResetDeviceBytesPeak();

// An owning device buffer.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const char* what) : p_(DeviceMalloc(bytes, what)), n_(bytes) {}
  ~DeviceBuffer() { DeviceFree(p_, n_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      DeviceFree(p_, n_);
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p_; }
  template <typename T>
  T* as() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace strata::cuda

// Plain device-memory read bandwidth (see strata/cuda/cuda_backend.h,
// MeasureDeviceReadBandwidth, which checks for a device first).
#pragma once

#include <cstdint>

namespace strata::cuda {

// Bytes/s of the best of `reps` timed reads of `bytes` of device memory.
double ReadBandwidth(uint64_t bytes, int reps);

}  // namespace strata::cuda

// The kernel emulator's own checks (README.md): kernels that are wrong on
// purpose (a missing barrier, shared memory read before it is written, too
// much dynamic shared memory) must fail here, and the H200 table must answer
// only what it holds.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

namespace {

constexpr int kThreads = 256;

// Sets a schedule for one test and puts the previous one back.
class ScheduleScope {
 public:
  explicit ScheduleScope(const std::string& spec) : saved_(strata::emu::ScheduleSpec()) { strata::emu::SetSchedule(spec); }
  ~ScheduleScope() { strata::emu::SetSchedule(saved_); }
  ScheduleScope(const ScheduleScope&) = delete;
  ScheduleScope& operator=(const ScheduleScope&) = delete;

 private:
  std::string saved_;
};

// Each thread publishes its index, then reads its neighbour's: correct only
// with the barrier between. (Not templates: GCC ignores the section attribute
// that poisons static shared memory on statics of template instantiations.)
__device__ void Neighbour(int* s, bool sync, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t;
  if (sync) __syncthreads();
  out[blockIdx.x * kThreads + t] = s[(t + 1) % kThreads];
}
__global__ void NeighbourSynced(int* out) {
  __shared__ int s[kThreads];
  Neighbour(s, true, out);
}
__global__ void NeighbourRacy(int* out) {
  __shared__ int s[kThreads];
  Neighbour(s, false, out);
}

// The same within one warp, with or without __syncwarp.
__device__ void WarpNeighbour(int* s, bool sync, int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  s[lane] = lane;
  if (sync) __syncwarp();
  out[lane] = s[(lane + 1) % 32];
}
__global__ void WarpNeighbourSynced(int* out) {
  __shared__ int s[32];
  WarpNeighbour(s, true, out);
}
__global__ void WarpNeighbourRacy(int* out) {
  __shared__ int s[32];
  WarpNeighbour(s, false, out);
}

// Thread (and block) order made visible: each thread takes the next slot.
__global__ void ArrivalKernel(unsigned* next, int* order) {
  order[atomicAdd(next, 1u)] = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
}

template <typename T>
struct DeviceBuffer {
  explicit DeviceBuffer(size_t n, T fill = T{}) : n(n) {
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    std::vector<T> v(n, fill);
    std::memcpy(p, v.data(), n * sizeof(T));
  }
  ~DeviceBuffer() { cudaFree(p); }
  std::vector<T> Get() const { return std::vector<T>(p, p + n); }
  T* p = nullptr;
  size_t n;
};

std::vector<int> Neighbours(bool sync, const std::string& schedule, unsigned blocks = 1) {
  ScheduleScope scope(schedule);
  DeviceBuffer<int> out(kThreads * blocks);
  strata::emu::Launch(sync ? NeighbourSynced : NeighbourRacy, blocks, kThreads, 0, nullptr)(out.p);
  return out.Get();
}

std::vector<int> Arrivals(const std::string& schedule, unsigned blocks, unsigned threads) {
  ScheduleScope scope(schedule);
  DeviceBuffer<unsigned> next(1);
  DeviceBuffer<int> order(blocks * threads, -1);
  strata::emu::Launch(ArrivalKernel, blocks, threads, 0, nullptr)(next.p, order.p);
  return order.Get();
}

TEST(CudaEmulator, SchedulesOrderThreadsAndBlocks) {
  const std::vector<int> fwd = Arrivals("forward", 3, 64);
  std::vector<int> ids(fwd.size());
  std::iota(ids.begin(), ids.end(), 0);
  EXPECT_EQ(fwd, ids);
  std::vector<int> rev = Arrivals("reverse", 3, 64);
  std::reverse(rev.begin(), rev.end());
  EXPECT_EQ(rev, ids);
  const std::vector<int> s1 = Arrivals("shuffle:1", 3, 64), s2 = Arrivals("shuffle:2", 3, 64);
  EXPECT_NE(s1, ids);
  EXPECT_NE(s1, s2);
  EXPECT_EQ(s1, Arrivals("shuffle:1", 3, 64));  // a seed reproduces its order
  std::vector<int> sorted = s1;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, ids);
}

TEST(CudaEmulator, AMissingSyncthreadsFailsUnderSomeSchedule) {
  std::vector<int> want(kThreads);
  for (int t = 0; t < kThreads; ++t) want[t] = (t + 1) % kThreads;
  for (const char* s : {"forward", "reverse", "shuffle:1", "shuffle:2"}) EXPECT_EQ(Neighbours(true, s), want) << s;
  int wrong = 0;
  for (const char* s : {"forward", "reverse", "shuffle:1", "shuffle:2"}) wrong += Neighbours(false, s) != want;
  EXPECT_GE(wrong, 2);  // forward reads poison from every later thread, reverse from thread 0
}

TEST(CudaEmulator, AMissingSyncwarpFailsUnderSomeSchedule) {
  for (const bool sync : {true, false}) {
    int wrong = 0;
    for (const char* s : {"forward", "reverse", "shuffle:1", "shuffle:2"}) {
      ScheduleScope scope(s);
      DeviceBuffer<int> out(32);
      strata::emu::Launch(sync ? WarpNeighbourSynced : WarpNeighbourRacy, 1, 32, 0, nullptr)(out.p);
      const std::vector<int> got = out.Get();
      for (int l = 0; l < 32; ++l) wrong += got[l] != (l + 1) % 32;
    }
    if (sync) EXPECT_EQ(wrong, 0);
    else EXPECT_GT(wrong, 0);
  }
}

// Death tests re-run the binary ("threadsafe"): the backend tests leave TBB threads behind.
class CudaEmulatorDeathTest : public testing::Test {
 protected:
  void SetUp() override { testing::GTEST_FLAG(death_test_style) = "threadsafe"; }
};

TEST_F(CudaEmulatorDeathTest, SeveralSchedulesMustLeaveTheSameBytes) {
  std::vector<int> want(kThreads);
  for (int t = 0; t < kThreads; ++t) want[t] = (t + 1) % kThreads;
  const std::vector<int> one_block = want;
  want.insert(want.end(), one_block.begin(), one_block.end());  // two blocks
  EXPECT_EQ(Neighbours(true, "all", 2), want) << "a correct kernel passes";
  EXPECT_DEATH(Neighbours(false, "all"), "leaves different device memory under schedule reverse than under forward");
}

TEST_F(CudaEmulatorDeathTest, ABadScheduleAborts) {
  EXPECT_DEATH(strata::emu::SetSchedule("backwards"), "is not forward, reverse, shuffle:SEED");
  EXPECT_DEATH(strata::emu::SetSchedule("shuffle:x"), "is not forward, reverse, shuffle:SEED");
}

// Block b reads what its own threads never wrote: on a GPU, garbage (another
// block's leftovers at best); here, poison in every block.
__global__ void ReadBeforeWriteKernel(float* out) {
  __shared__ float s[kThreads];
  float* dyn = static_cast<float*>(::strata::emu::DynamicShared());  // STRATA_DYNAMIC_SHARED's emulator spelling
  const unsigned t = threadIdx.x;
  out[(blockIdx.x * kThreads + t) * 2] = s[t];
  out[(blockIdx.x * kThreads + t) * 2 + 1] = dyn[t];
  s[t] = 1.0f;  // what the next block would see without the poison
  dyn[t] = 1.0f;
}

TEST(CudaEmulator, SharedMemoryIsPoisonedBeforeEveryBlock) {
  DeviceBuffer<float> out(3 * kThreads * 2);
  strata::emu::Launch(ReadBeforeWriteKernel, 3, kThreads, kThreads * sizeof(float), nullptr)(out.p);
  for (const float v : out.Get()) ASSERT_TRUE(std::isnan(v));
  strata::emu::Launch(ReadBeforeWriteKernel, 1, kThreads, kThreads * sizeof(float), nullptr)(out.p);
  for (const float v : out.Get()) ASSERT_TRUE(std::isnan(v)) << "poisoned again at the next launch";
}

__global__ void EmptyKernel() {}

TEST(CudaEmulator, DynamicSharedMemoryPast48KiBNeedsTheOptIn) {
  (void)cudaGetLastError();
  strata::emu::Launch(EmptyKernel, 1, 32, 48 * 1024, nullptr)();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  strata::emu::Launch(EmptyKernel, 1, 32, 48 * 1024 + 1, nullptr)();
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(EmptyKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024 + 1),
            cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(EmptyKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024), cudaSuccess);
  strata::emu::Launch(EmptyKernel, 1, 32, 227 * 1024, nullptr)();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaEmulator, AttributesAreTheH200s) {
  int v = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  EXPECT_EQ(v, 132);
  ASSERT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  EXPECT_EQ(v, 232448);
  EXPECT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrWarpSize, 1), cudaErrorInvalidDevice);
  cudaDeviceProp p{};
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_EQ(p.major * 10 + p.minor, 90);
  EXPECT_EQ(p.sharedMemPerBlock, 48u * 1024);
  EXPECT_EQ(p.sharedMemPerMultiprocessor, 228u * 1024);
  EXPECT_EQ(p.regsPerMultiprocessor, 65536);
  EXPECT_EQ(p.maxThreadsPerMultiProcessor, 2048);
  EXPECT_EQ(p.l2CacheSize, 50 * 1024 * 1024);
  EXPECT_EQ(p.memoryBusWidth, 6144);
}

TEST_F(CudaEmulatorDeathTest, AnAttributeNotInTheTableAborts) {
  int v = 0;
  // 43 is cudaDevAttrMaxTexture1DLayeredLayers, which the table does not hold.
  EXPECT_DEATH((void)cudaDeviceGetAttribute(&v, static_cast<cudaDeviceAttr>(43), 0),
               "cudaDeviceGetAttribute\\(43\\) is not in the emulator's H200 table");
}

}  // namespace

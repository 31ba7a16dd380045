// What differs between CPU and CUDA builds of libtorch (>= 2.6) and between CPUs, so the rest of
// the code calls one spelling.
#pragma once
#include <ATen/Config.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "flatune/core/error.h"

#ifdef FLATUNE_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

static_assert(TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6),
              "flatune needs libtorch 2.6 or newer");

namespace flatune::compat {

inline std::string torch_version() { return TORCH_VERSION; }

// How libgomp's idle threads wait between parallel regions when the user has not said
// (OMP_WAIT_POLICY). A libtorch with MKL (the PyPI wheel) runs its matrix products on libgomp's
// own threads: spinning (ACTIVE) keeps them awake between the thousands of small regions of a
// step, 1.2-1.5x the tokens/s of PASSIVE on 2 cores (bench train, 1M and 10M). A libtorch on
// OpenBLAS (Debian's) has a second pool of threads for the products, and libgomp's spinning took
// the cores they needed (5x slower): PASSIVE there.
inline const char* default_omp_wait_policy() {
#if AT_MKL_ENABLED()
  return "ACTIVE";
#else
  return "PASSIVE";
#endif
}

// Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX-BF16); decided at run time because
// machines of one kind differ.
inline bool cpu_has_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512bf16")) return true;
  // AMX-BF16: CPUID.(EAX=7,ECX=0):EDX[22].
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  return (d >> 22) & 1u;
#else
  return false;
#endif
}

// A CPU kernel compiled also for AVX2 and AVX-512 and picked by the CPU at load time: the build's
// baseline is SSE2, a quarter of AVX-512's lanes.
#if defined(__x86_64__) && defined(__GNUC__)
#define FLATUNE_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FLATUNE_CPU_CLONES
#endif

inline bool cuda_available() {
#ifdef FLATUNE_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

// The CUDA devices this process sees (0 on a CPU build).
inline int cuda_device_count() {
#ifdef FLATUNE_CUDA
  return static_cast<int>(torch::cuda::device_count());
#else
  return 0;
#endif
}

// Whether collectives on CUDA tensors can use NCCL (a CUDA libtorch built with c10d's NCCL).
inline bool has_nccl() {
#if defined(FLATUNE_CUDA) && defined(FLATUNE_NCCL)
  return true;
#else
  return false;
#endif
}

// The GPU index a CUDA spelling asks for: N of `cuda:N`; for a bare `cuda`, the rank's own GPU
// under `flatune launch` (WORLD_SIZE above 1: LOCAL_RANK), else 0. The spelling is checked.
inline int requested_cuda_index(const std::string& spec) {
  const std::string usage = "' is not a device (cpu, cuda, cuda:N with N a GPU index)";
  if (spec == "cuda") {
    const char* world = std::getenv("WORLD_SIZE");
    const char* local = std::getenv("LOCAL_RANK");
    if (!world || std::atoi(world) <= 1 || !local || !*local) return 0;
    const std::string rank = local;
    if (rank.size() > 4 || rank.find_first_not_of("0123456789") != std::string::npos)
      fail("environment LOCAL_RANK", "not a GPU index: '" + rank + "'");
    return std::stoi(rank);
  }
  const std::string digits = spec.rfind("cuda:", 0) == 0 ? spec.substr(5) : "";
  if (digits.empty() || digits.size() > 4 || digits.find_first_not_of("0123456789") != std::string::npos)
    fail("--device", "'" + spec + usage);
  return std::stoi(digits);
}

// --device as the verbs spell it: `cpu`, `cuda` or `cuda:N` (see requested_cuda_index). Every
// problem is one Error naming the flag: a misspelling, a CPU build of libtorch, no visible GPU,
// an index out of range.
inline torch::Device resolve_device(const std::string& spec) {
  if (spec == "cpu") return torch::Device(torch::kCPU);
  const int index = requested_cuda_index(spec);
  const std::string where = "--device " + spec;
#ifndef FLATUNE_CUDA
  (void)index;
  fail(where, "this flatune was built without CUDA (libtorch " + torch_version() + " CPU build)");
#else
  const int count = cuda_device_count();
  if (count == 0 || !cuda_available())
    fail(where, "no CUDA device is visible to this process (libtorch " + torch_version() + " with CUDA)");
  if (index >= count)
    fail(where, "GPU " + std::to_string(index) + " does not exist: this process sees " + std::to_string(count) +
                    (count == 1 ? " GPU (cuda:0)" : " GPUs (cuda:0 to cuda:" + std::to_string(count - 1) + ")"));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
#endif
}

// The device a verb's models and tensors go to when nothing names one: the CPU unless the
// verb's --device set it (set_process_device) at its start. One setting per process, so that
// everything a verb does through library calls that load models themselves (an experiment's
// runs, evaluations, flatness measurements and merges) follows the one flag.
inline torch::Device& process_device_slot() {
  static torch::Device device(torch::kCPU);
  return device;
}
inline torch::Device process_device() { return process_device_slot(); }
inline void set_process_device(const torch::Device& device) { process_device_slot() = device; }

// Makes `device` the current GPU of this process (a no-op for the CPU), so that work without an
// explicit index, NCCL's included, lands on the rank's own GPU.
inline void use_device(const torch::Device& device) {
#ifdef FLATUNE_CUDA
  if (device.is_cuda()) c10::cuda::set_device(device.index());
#else
  (void)device;
#endif
}

// Waits for the work queued on `device` (a no-op for the CPU): benchmarks time with it.
inline void synchronize(const torch::Device& device) {
#ifdef FLATUNE_CUDA
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
#else
  (void)device;
#endif
}

// Autocast on or off for one device type, with the dtype it casts to.
inline void set_autocast(c10::DeviceType type, bool enabled, at::ScalarType dtype = at::kBFloat16) {
  at::autocast::set_autocast_enabled(type, enabled);
  at::autocast::set_autocast_dtype(type, dtype);
}

// The dtype a forward's attention products run in on `device`: autocast's while autocast is on
// there, else the activations' own.
inline at::ScalarType attention_dtype(const torch::Device& device, at::ScalarType activations) {
  if (at::autocast::is_autocast_enabled(device.type())) return at::autocast::get_autocast_dtype(device.type());
  return activations;
}

// Whether attention over `keys` keys runs faster as plain products (scores, softmax, weighted
// sum) than in libtorch's fused flash kernel. On the CPU in bf16 it does up to 512 keys: the
// products go to oneDNN's bf16 GEMMs while the flash kernel works in small fp32 blocks. Forward
// and backward of one layer (4 heads of 64, 2,048 tokens, torch 2.13 wheel, AMD EPYC with
// AVX512-BF16, 2 threads): 0.24-0.64x the flash kernel's time at 128-512 keys, 1.16x at 1,024,
// 1.59x at 2,048. In fp32 the two are even at 256 keys and flash wins beyond; on CUDA the fused
// kernels win.
inline bool prefer_unfused_attention(const torch::Device& device, at::ScalarType dtype, int64_t keys) {
  return device.is_cpu() && dtype == at::kBFloat16 && keys <= 512;
}

// bf16 autocast for the forward passes made while it lives, on the CPU (matmuls in bf16, the rest
// as autocast decides) or on CUDA (the same lists CUDA autocast keeps); the weights stay fp32
// masters and backward follows what the forward recorded. On leaving it drops the bf16 copies
// autocast caches of the weights: the optimizer (and SAM's perturbation) changes the fp32
// weights in place, so a cached copy would be stale at the next forward.
class Bf16Autocast {
 public:
  Bf16Autocast(bool enabled, c10::DeviceType type) : enabled_(enabled), type_(type) {
    if (!enabled_) return;
    set_autocast(type_, true, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~Bf16Autocast() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_autocast(type_, false);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
  c10::DeviceType type_;
};

// The default random generator of a device (the CPU's, or a GPU's): what dropout there draws
// from, so what a checkpoint keeps and a recomputation replays.
inline at::Generator default_generator(const torch::Device& device) {
  if (device.is_cpu()) return at::detail::getDefaultCPUGenerator();
  return at::globalContext().defaultGenerator(device);
}

// A CPU allocator that counts the bytes of tensor storage alive and their high-water mark, for
// the benchmarks' memory accounting (weights, gradients, optimizer state and activations,
// measured rather than estimated). It forwards to the allocator it replaces.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(size_t n) override { return wrap(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  int64_t live() const { return live_.load(); }
  int64_t peak() const { return peak_.load(); }
  void reset_peak() { peak_.store(live_.load()); }

 private:
  // The base allocator's own DataPtr for each block, by data address: libtorch's raw_allocate
  // requires a DataPtr whose context is its data, so the bookkeeping cannot ride in the context.
  struct Block {
    c10::DataPtr inner;
    int64_t bytes = 0;
    const CountingCpuAllocator* owner = nullptr;
  };
  static std::mutex& registry_mutex() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<void*, Block>& registry() {
    static auto* blocks = new std::unordered_map<void*, Block>();  // never destroyed: frees may come after exit
    return *blocks;
  }
  c10::DataPtr wrap(size_t n) const {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    if (!data) return inner;
    const int64_t bytes = static_cast<int64_t>(n);
    {
      std::lock_guard<std::mutex> lock(registry_mutex());
      registry()[data] = Block{std::move(inner), bytes, this};
    }
    const int64_t now = live_.fetch_add(bytes) + bytes;
    int64_t seen = peak_.load();
    while (now > seen && !peak_.compare_exchange_weak(seen, now)) {}
    return c10::DataPtr(data, data, &release, c10::Device(c10::DeviceType::CPU));
  }
  static void release(void* data) {
    Block b;
    {
      std::lock_guard<std::mutex> lock(registry_mutex());
      auto it = registry().find(data);
      if (it == registry().end()) return;
      b = std::move(it->second);
      registry().erase(it);
    }
    b.owner->live_.fetch_sub(b.bytes);
  }  // b.inner frees the storage through the base allocator's own deleter
  c10::Allocator* base_;
  mutable std::atomic<int64_t> live_{0}, peak_{0};
};

// Puts `a` in front of the CPU allocator for the rest of the process (storage allocated before
// keeps its own deleter, so it is never counted as freed).
inline void install_cpu_allocator(c10::Allocator* a) { c10::SetCPUAllocator(a, /*priority=*/1); }

}  // namespace flatune::compat

// What differs between CPU and CUDA builds of libtorch (>= 2.6) and between CPUs, so the rest of
// the code calls one spelling.
#pragma once
#include <ATen/autocast_mode.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

static_assert(TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6),
              "flatune needs libtorch 2.6 or newer");

namespace flatune::compat {

inline std::string torch_version() { return TORCH_VERSION; }

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

inline bool cuda_available() {
#ifdef FLATUNE_CUDA
  return torch::cuda::is_available();
#else
  return false;
#endif
}

// CPU autocast on or off, with the dtype it casts to.
inline void set_cpu_autocast(bool enabled, at::ScalarType dtype = at::kBFloat16) {
  at::autocast::set_autocast_enabled(at::kCPU, enabled);
  at::autocast::set_autocast_dtype(at::kCPU, dtype);
}

// bf16 autocast on the CPU for the forward passes made while it lives (matmuls in bf16, the rest
// as autocast decides); backward follows what the forward recorded. On leaving it drops the
// bf16 copies autocast caches of the weights: the optimizer (and SAM's perturbation) changes the
// fp32 weights in place, so a cached copy would be stale at the next forward.
class CpuBf16Autocast {
 public:
  explicit CpuBf16Autocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
    set_cpu_autocast(true, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~CpuBf16Autocast() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_cpu_autocast(false);
  }
  CpuBf16Autocast(const CpuBf16Autocast&) = delete;
  CpuBf16Autocast& operator=(const CpuBf16Autocast&) = delete;

 private:
  bool enabled_;
};

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

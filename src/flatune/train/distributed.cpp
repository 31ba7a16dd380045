#include "flatune/train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef FLATUNE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <thread>

#include "flatune/core/compat.h"
#include "flatune/core/error.h"

namespace flatune {

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  std::chrono::milliseconds timeout{0};
  // The backend itself (Gloo or NCCL): in libtorch 2.x a ProcessGroup only dispatches to
  // backends, and every collective flatune makes is one the backend runs on its own device.
  c10::intrusive_ptr<c10d::Backend> pg;
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0)
    fail(std::string("environment ") + name, std::string("not a non-negative integer: '") + v + "'");
  return static_cast<int>(x);
}

c10d::Backend& group(const Distributed& d) { return *static_cast<Group*>(d.impl.get())->pg; }

// After a collective failed: which peers never reached it. Every rank that fails marks itself in
// the store and looks, for a short while, for the others' marks; a peer that is stopped or stuck
// elsewhere leaves none. (A peer that died made the collective fail fast and leaves none either.)
std::string silent_peers(const Distributed& d) {
  auto& store = *static_cast<Group*>(d.impl.get())->store;
  const std::string prefix = "flatune/failed-collective/";
  std::vector<int> silent;
  try {
    // Short: the store lives in rank 0, which may be the stopped one.
    store.setTimeout(std::chrono::seconds(2));
    store.set(prefix + std::to_string(d.rank), std::vector<uint8_t>{1});
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (;;) {
      silent.clear();
      for (int r = 0; r < d.world_size; ++r)
        if (r != d.rank && !store.check({prefix + std::to_string(r)})) silent.push_back(r);
      if (silent.empty() || std::chrono::steady_clock::now() > until) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  } catch (const std::exception&) {
    return d.rank == 0 ? "" : "rank 0 (which holds the rendezvous store) does not answer";
  }
  if (silent.empty()) return "";
  std::string names;
  for (int r : silent) names += (names.empty() ? "" : ", ") + std::to_string(r);
  return (silent.size() == 1 ? "rank " : "ranks ") + names + " never reached it (stopped, stuck or dead)";
}

// Runs a collective; a peer that died or timed out becomes an Error naming this rank and the
// peers that never arrived.
template <typename Fn>
void collective(const Distributed& d, const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    const auto timeout_s = static_cast<Group*>(d.impl.get())->timeout.count() / 1000.0;
    std::string who = silent_peers(d);
    char limit[64];
    std::snprintf(limit, sizeof limit, "%g", timeout_s);
    fail("rank " + std::to_string(d.rank), std::string(what) + " failed" + (who.empty() ? "" : ": " + who) +
                                               " (collective timeout " + limit + " s): " + msg);
  }
}

}  // namespace

std::chrono::milliseconds collective_timeout_from_env() {
  const char* v = std::getenv("FLATUNE_COLLECTIVE_TIMEOUT");
  if (!v || !*v) return std::chrono::milliseconds(static_cast<int64_t>(kDefaultCollectiveTimeoutSeconds * 1000));
  char* end = nullptr;
  double seconds = std::strtod(v, &end);
  if (*end != '\0' || !(seconds > 0))
    fail("environment FLATUNE_COLLECTIVE_TIMEOUT", std::string("not a positive number of seconds: '") + v + "'");
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

Distributed init_distributed(torch::Device device) { return init_distributed(collective_timeout_from_env(), device); }

namespace {

// The one place the backend is chosen: NCCL for tensors on a GPU when libtorch has it, Gloo for
// everything else (a GPU without NCCL goes through CPU buffers). Sets where buffers live.
c10::intrusive_ptr<c10d::Backend> make_backend(Distributed& d, const c10::intrusive_ptr<c10d::Store>& store,
                                               const std::string& host, std::chrono::milliseconds timeout,
                                               const torch::Device& device) {
#ifdef FLATUNE_NCCL
  if (device.is_cuda()) {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    d.comm_device = device;
    d.backend = "nccl";
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, d.rank, d.world_size, opts);
  }
#else
  (void)device;
#endif
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host == "localhost" ? "127.0.0.1" : host));
  d.comm_device = torch::Device(torch::kCPU);
  d.backend = "gloo";
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, d.rank, d.world_size, opts);
}

}  // namespace

Distributed init_distributed(std::chrono::milliseconds timeout, torch::Device device) {
  Distributed d;
  d.world_size = env_int("WORLD_SIZE", 1);
  if (d.world_size <= 1) return d;
  d.rank = env_int("RANK", -1);
  d.local_rank = env_int("LOCAL_RANK", d.rank);
  if (d.rank < 0 || d.rank >= d.world_size) fail("environment RANK", "must be set and below WORLD_SIZE");
  const char* addr = std::getenv("MASTER_ADDR");
  std::string host = addr && *addr ? addr : "127.0.0.1";
  int port = env_int("MASTER_PORT", 29500);
  auto g = std::make_shared<Group>();
  g->timeout = timeout;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.isServer = d.rank == 0;
    so.numWorkers = d.world_size;
    so.timeout = timeout;
    g->store = c10::make_intrusive<c10d::TCPStore>(host, so);
    g->pg = make_backend(d, g->store, host, timeout, device);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    fail("rank " + std::to_string(d.rank), "cannot join the process group at " + host + ":" + std::to_string(port) +
                                               ": " + msg.substr(0, msg.find('\n')));
  }
  d.impl = g;
  return d;
}

namespace {

// Sums across ranks in buckets of at most `bucket_bytes` (a model with hundreds of tensors makes
// a few collectives), then divides each bucket by `divisor` before copying it back.
void allreduce_buckets(const Distributed& d, const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes,
                       double divisor) {
  if (!d.active() || tensors.empty()) return;
  torch::NoGradGuard ng;
  size_t i = 0;
  while (i < tensors.size()) {
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    auto dtype = tensors[i].scalar_type();
    while (i < tensors.size() && tensors[i].scalar_type() == dtype &&
           (bucket.empty() || bytes + tensors[i].nbytes() <= bucket_bytes)) {
      bytes += tensors[i].nbytes();
      bucket.push_back(tensors[i++]);
    }
    std::vector<torch::Tensor> flat_views;
    for (auto& t : bucket) flat_views.push_back(t.reshape({-1}));
    std::vector<torch::Tensor> flat = {torch::cat(flat_views).to(d.comm_device)};
    collective(d, "all-reduce", [&] { group(d).allreduce(flat)->wait(); });
    if (divisor != 1.0) flat[0].div_(divisor);
    int64_t off = 0;
    for (auto& t : bucket) {
      t.copy_(flat[0].narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

}  // namespace

void Distributed::allreduce_mean(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes) const {
  allreduce_buckets(*this, tensors, bucket_bytes, world_size);
}

void Distributed::allreduce_sum(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes) const {
  allreduce_buckets(*this, tensors, bucket_bytes, 1.0);
}

void Distributed::broadcast(const std::vector<torch::Tensor>& tensors) const {
  if (!active()) return;
  torch::NoGradGuard ng;
  for (const auto& t : tensors) {
    const bool in_place = t.is_contiguous() && t.device() == comm_device;
    std::vector<torch::Tensor> one = {in_place ? t : t.contiguous().to(comm_device)};
    collective(*this, "broadcast", [&] { group(*this).broadcast(one)->wait(); });
    if (!in_place) t.copy_(one[0]);
  }
}

namespace {

// The tensors grouped by dtype, each group flattened into one buffer for one collective:
// `run(flat, group)` runs it and says whether the buffer's values go back into the tensors.
template <typename Fn>
void on_flat_buffers(const std::vector<torch::Tensor>& tensors, const torch::Device& comm_device, Fn&& run) {
  std::map<at::ScalarType, std::vector<torch::Tensor>> by_dtype;
  for (const auto& t : tensors) by_dtype[t.scalar_type()].push_back(t);
  for (auto& [dtype, group_tensors] : by_dtype) {
    std::vector<torch::Tensor> flat_views;
    for (auto& t : group_tensors) flat_views.push_back(t.reshape({-1}));
    std::vector<torch::Tensor> flat = {torch::cat(flat_views).to(comm_device)};
    if (!run(flat, group_tensors)) continue;
    int64_t off = 0;
    for (auto& t : group_tensors) {
      t.copy_(flat[0].narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }
}

}  // namespace

void Distributed::broadcast_from(const std::vector<torch::Tensor>& tensors, int root) const {
  if (!active() || tensors.empty()) return;
  torch::NoGradGuard ng;
  on_flat_buffers(tensors, comm_device, [&](std::vector<torch::Tensor>& flat, const std::vector<torch::Tensor>&) {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    collective(*this, "broadcast", [&] { group(*this).broadcast(flat, opts)->wait(); });
    return true;
  });
}

void Distributed::reduce_mean_to(const std::vector<torch::Tensor>& tensors, int root) const {
  if (!active() || tensors.empty()) return;
  torch::NoGradGuard ng;
  on_flat_buffers(tensors, comm_device,
                  [&](std::vector<torch::Tensor>& flat, const std::vector<torch::Tensor>& group_tensors) {
                    c10d::ReduceOptions opts;
                    opts.rootRank = root;
                    collective(*this, "reduce", [&] { group(*this).reduce(flat, opts)->wait(); });
                    if (rank != root) {
                      for (const auto& t : group_tensors) t.zero_();
                      return false;
                    }
                    flat[0].div_(world_size);
                    return true;
                  });
}

double Distributed::mean(double value) const {
  if (!active()) return value;
  std::vector<torch::Tensor> t = {torch::tensor({value}, torch::kDouble).to(comm_device)};
  collective(*this, "all-reduce", [&] { group(*this).allreduce(t)->wait(); });
  return t[0].item<double>() / world_size;
}

std::vector<double> Distributed::all_gather(double value) const {
  if (!active()) return {value};
  std::vector<torch::Tensor> in = {torch::tensor({value}, torch::kDouble).to(comm_device)};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < world_size; ++r) out[0].push_back(torch::zeros_like(in[0]));
  collective(*this, "all-gather", [&] { group(*this).allgather(out, in)->wait(); });
  std::vector<double> values;
  for (auto& t : out[0]) values.push_back(t.item<double>());
  return values;
}

std::vector<std::string> Distributed::all_gather(const std::string& bytes) const {
  if (!active()) return {bytes};
  // Gloo's all-gather wants equal sizes: pad every rank's bytes to the longest.
  std::vector<double> sizes = all_gather(static_cast<double>(bytes.size()));
  const int64_t longest = static_cast<int64_t>(*std::max_element(sizes.begin(), sizes.end()));
  std::vector<torch::Tensor> in = {torch::zeros({std::max<int64_t>(longest, 1)}, torch::kUInt8)};
  std::memcpy(in[0].data_ptr(), bytes.data(), bytes.size());
  in[0] = in[0].to(comm_device);
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < world_size; ++r) out[0].push_back(torch::zeros_like(in[0]));
  collective(*this, "all-gather", [&] { group(*this).allgather(out, in)->wait(); });
  std::vector<std::string> all;
  for (int r = 0; r < world_size; ++r) {
    const torch::Tensor host = out[0][r].cpu();
    all.emplace_back(static_cast<const char*>(host.data_ptr()), static_cast<size_t>(sizes[r]));
  }
  return all;
}

void Distributed::barrier() const {
  if (!active()) return;
  collective(*this, "barrier", [&] { group(*this).barrier()->wait(); });
}

}  // namespace flatune

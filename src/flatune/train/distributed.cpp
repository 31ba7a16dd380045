#include "flatune/train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "flatune/core/error.h"

namespace flatune {

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  // The Gloo backend itself: in libtorch 2.x a ProcessGroup only dispatches to backends, and
  // every collective flatune makes is one Gloo runs on CPU tensors.
  c10::intrusive_ptr<c10d::Backend> pg;
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0) fail(std::string("environment ") + name, std::string("not a non-negative integer: '") + v + "'");
  return static_cast<int>(x);
}

c10d::Backend& group(const Distributed& d) { return *static_cast<Group*>(d.impl.get())->pg; }

// Runs a collective; a peer that died or timed out becomes an Error naming this rank.
template <typename Fn>
void collective(const Distributed& d, const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    fail("rank " + std::to_string(d.rank), std::string(what) + " failed (a peer died or timed out): " + msg);
  }
}

}  // namespace

Distributed init_distributed(std::chrono::milliseconds timeout) {
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
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.isServer = d.rank == 0;
    so.numWorkers = d.world_size;
    so.timeout = timeout;
    g->store = c10::make_intrusive<c10d::TCPStore>(host, so);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host == "localhost" ? "127.0.0.1" : host));
    g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, d.rank, d.world_size, opts);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    fail("rank " + std::to_string(d.rank), "cannot join the process group at " + host + ":" + std::to_string(port) + ": " +
                                               msg.substr(0, msg.find('\n')));
  }
  d.impl = g;
  return d;
}

namespace {

// Sums across ranks in buckets of at most `bucket_bytes` (a model with hundreds of tensors makes
// a few collectives), then divides each bucket by `divisor` before copying it back.
void allreduce_buckets(const Distributed& d, const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes, double divisor) {
  if (!d.active() || tensors.empty()) return;
  torch::NoGradGuard ng;
  size_t i = 0;
  while (i < tensors.size()) {
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    auto dtype = tensors[i].scalar_type();
    while (i < tensors.size() && tensors[i].scalar_type() == dtype && (bucket.empty() || bytes + tensors[i].nbytes() <= bucket_bytes)) {
      bytes += tensors[i].nbytes();
      bucket.push_back(tensors[i++]);
    }
    std::vector<torch::Tensor> flat_views;
    for (auto& t : bucket) flat_views.push_back(t.reshape({-1}));
    std::vector<torch::Tensor> flat = {torch::cat(flat_views)};
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
    std::vector<torch::Tensor> one = {t.is_contiguous() ? t : t.contiguous()};
    collective(*this, "broadcast", [&] { group(*this).broadcast(one)->wait(); });
    if (!t.is_contiguous()) t.copy_(one[0]);
  }
}

double Distributed::mean(double value) const {
  if (!active()) return value;
  std::vector<torch::Tensor> t = {torch::tensor({value}, torch::kDouble)};
  collective(*this, "all-reduce", [&] { group(*this).allreduce(t)->wait(); });
  return t[0].item<double>() / world_size;
}

std::vector<double> Distributed::all_gather(double value) const {
  if (!active()) return {value};
  std::vector<torch::Tensor> in = {torch::tensor({value}, torch::kDouble)};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < world_size; ++r) out[0].push_back(torch::zeros({1}, torch::kDouble));
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
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < world_size; ++r) out[0].push_back(torch::zeros_like(in[0]));
  collective(*this, "all-gather", [&] { group(*this).allgather(out, in)->wait(); });
  std::vector<std::string> all;
  for (int r = 0; r < world_size; ++r)
    all.emplace_back(static_cast<const char*>(out[0][r].data_ptr()), static_cast<size_t>(sizes[r]));
  return all;
}

void Distributed::barrier() const {
  if (!active()) return;
  collective(*this, "barrier", [&] { group(*this).barrier()->wait(); });
}

}  // namespace flatune

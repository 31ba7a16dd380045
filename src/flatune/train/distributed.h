// Data parallel training on libtorch's c10d: process group from the torchrun environment
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), TCPStore rendezvous with a timeout,
// NCCL when the device is a GPU and libtorch has c10d's NCCL, Gloo otherwise. Collectives take
// tensors wherever they live: each runs on a flat buffer on the backend's device. One process is the degenerate case:
// every collective is then a no-op, so the trainer calls them unconditionally.
#pragma once
#include <torch/torch.h>

#include "flatune/data/batching.h"  // shard_range

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace flatune {

struct Distributed {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::shared_ptr<void> impl;  // the process group and its store, when world_size > 1
  // Where the backend's buffers live: the GPU for NCCL, the CPU for Gloo.
  torch::Device comm_device{torch::kCPU};
  std::string backend = "none";  // gloo | nccl | none (one process)

  bool active() const { return world_size > 1; }
  bool is_main() const { return rank == 0; }

  // Sums then divides by world_size, in place, in buckets of at most `bucket_bytes`.
  void allreduce_mean(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes = 32 << 20) const;
  // Sums, in place, in the same buckets.
  void allreduce_sum(const std::vector<torch::Tensor>& tensors, int64_t bucket_bytes = 32 << 20) const;
  // Copies rank 0's values into every rank's tensors, in place.
  void broadcast(const std::vector<torch::Tensor>& tensors) const;
  // Copies `root`'s values into every rank's tensors, in place, as one collective (the tensors
  // flattened into one buffer per dtype).
  void broadcast_from(const std::vector<torch::Tensor>& tensors, int root) const;
  // Sums every rank's tensors into `root`'s and divides by world_size there (one collective per
  // dtype); on the other ranks the tensors are zeroed: they no longer hold anything.
  void reduce_mean_to(const std::vector<torch::Tensor>& tensors, int root) const;
  double mean(double value) const;
  // Every rank's value, in rank order.
  std::vector<double> all_gather(double value) const;
  // Every rank's bytes, in rank order (for results that are not tensors: JSON of per-item scores).
  std::vector<std::string> all_gather(const std::string& bytes) const;
  void barrier() const;
};

// How long the rendezvous and each collective wait for the other ranks by default. A rank that
// writes a large checkpoint while the others wait at a barrier needs it long.
constexpr double kDefaultCollectiveTimeoutSeconds = 300;

// Reads the environment; without WORLD_SIZE (or WORLD_SIZE=1) returns a single-process context.
// `timeout` bounds the rendezvous and every collective: a dead or stuck peer makes the call
// throw an Error naming the rank that noticed and the peers that never arrived, never hang.
// `device` is where the caller's tensors live: a GPU selects NCCL (when libtorch has it).
Distributed init_distributed(std::chrono::milliseconds timeout, torch::Device device = torch::kCPU);
// The timeout from FLATUNE_COLLECTIVE_TIMEOUT (seconds; `flatune launch --collective-timeout`
// sets it), else the default.
Distributed init_distributed(torch::Device device = torch::kCPU);

}  // namespace flatune

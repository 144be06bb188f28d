// Backend choice for the io_uring proxy: the per-frontend snapshot the workers
// read (FrontendConfig), the counters shared by all workers (BackendEntry,
// FrontendShared), ClientIP session affinity, and PickBackend() itself. Pure
// logic over those types, unit-tested without sockets.
#pragma once

#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "controller/base/ipv4.h"
#include "controller/service_table.h"
#include "dataplane/uring/lb_algorithm.h"

namespace kpx::uring {

// One backend of one frontend. Counters are shared by every worker; an entry
// is reused across upserts of its frontend while the backend stays in the rule,
// and outlives its removal for as long as a connection still uses it.
struct BackendEntry {
  BackendEntry(Ipv4 ip, uint16_t port);
  BackendEntry(const BackendEntry&) = delete;
  BackendEntry& operator=(const BackendEntry&) = delete;

  const Ipv4 ip;
  const uint16_t port;
  sockaddr_in addr;  // ready for connect()

  std::atomic<uint64_t> active{0};  // connecting or relaying; least-conn reads it
  std::atomic<uint64_t> total{0};   // connections established
  std::atomic<uint64_t> failed_connects{0};
  std::atomic<uint64_t> bytes_to_backend{0};
  std::atomic<uint64_t> bytes_to_client{0};
};

// ClientIP -> backend pins, consistent across workers. Sharded so that workers
// accepting at once rarely meet on a lock. Expired pins are dropped lazily.
class AffinityTable {
 public:
  struct Pin {
    Ipv4 ip;
    uint16_t port = 0;
  };
  // The unexpired pin of `client` at `now`, if any.
  std::optional<Pin> Lookup(Ipv4 client, absl::Time now);
  // Pins `client` to `pin` until now + timeout (replacing any earlier pin).
  void Set(Ipv4 client, Pin pin, absl::Time now, absl::Duration timeout);
  size_t size() const;

 private:
  static constexpr int kShards = 16;
  // A shard purges its expired pins every this many insertions.
  static constexpr uint32_t kPurgeEvery = 1024;
  struct Entry {
    Pin pin;
    absl::Time expiry;
  };
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<Ipv4, Entry> pins ABSL_GUARDED_BY(mu);
    uint32_t inserts ABSL_GUARDED_BY(mu) = 0;
  };
  Shard& ShardFor(Ipv4 client) { return shards_[absl::HashOf(client) % kShards]; }
  std::array<Shard, kShards> shards_;
};

// The parts of a frontend that live as long as the frontend does (across
// upserts) and are shared by every worker.
struct FrontendShared {
  explicit FrontendShared(const controller::FrontendKey& k) : key(k) {}
  const controller::FrontendKey key;
  std::atomic<uint64_t> active{0};    // client connections open now
  std::atomic<uint64_t> total{0};     // client connections accepted
  std::atomic<uint64_t> rejected{0};  // of those, reset for want of a backend
  std::atomic<uint64_t> next_rr{0};   // round-robin cursor, shared by workers
  AffinityTable affinity;
};

// An immutable snapshot of one frontend's rule, as the workers use it. A new
// snapshot replaces the old one on every upsert; a connection keeps the
// snapshot it was accepted under (its retries pick from that set).
struct FrontendConfig {
  std::shared_ptr<FrontendShared> shared;
  std::vector<std::shared_ptr<BackendEntry>> backends;  // every backend of the rule
  std::vector<BackendEntry*> candidates;  // healthy ones; all of them if none is healthy
  LbAlgorithm algorithm = LbAlgorithm::kRandom;
  absl::Duration affinity_timeout = absl::ZeroDuration();  // zero: no affinity
};

// Builds a snapshot for `rule`, reusing the entries of `previous` (may be null)
// for backends that stay, so counters and least-conn state carry over.
std::shared_ptr<const FrontendConfig> BuildFrontendConfig(
    const controller::ServiceRule& rule, LbAlgorithm algorithm,
    std::shared_ptr<FrontendShared> shared, const FrontendConfig* previous);

// A small, fast, seedable generator (SplitMix64); one per worker, not shared.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint32_t Uniform(uint32_t n) { return static_cast<uint32_t>((Next() >> 32) * n >> 32); }

 private:
  uint64_t state_;
};

// Chooses a backend among config.candidates for a new connection from
// `client`, never one in `tried` (the attempts already failed for this
// connection). With affinity on, an unexpired pin to a backend still in the
// candidates wins, and the choice is (re)pinned until now + timeout. Returns
// null when no untried candidate is left.
BackendEntry* PickBackend(const FrontendConfig& config, Ipv4 client, absl::Time now,
                          absl::Span<BackendEntry* const> tried, Rng& rng);

}  // namespace kpx::uring

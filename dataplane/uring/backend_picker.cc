// Backend choice: random / round-robin / least-conn over the candidates, with
// ClientIP affinity layered on top and retries that never repeat a backend.
#include "dataplane/uring/backend_picker.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace kpx::uring {

BackendEntry::BackendEntry(Ipv4 ip_in, uint16_t port_in) : ip(ip_in), port(port_in) {
  std::memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = ip.be();
}

std::optional<AffinityTable::Pin> AffinityTable::Lookup(Ipv4 client, absl::Time now) {
  Shard& shard = ShardFor(client);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.pins.find(client);
  if (it == shard.pins.end()) return std::nullopt;
  if (it->second.expiry <= now) {
    shard.pins.erase(it);
    return std::nullopt;
  }
  return it->second.pin;
}

void AffinityTable::Set(Ipv4 client, Pin pin, absl::Time now, absl::Duration timeout) {
  Shard& shard = ShardFor(client);
  absl::MutexLock lock(&shard.mu);
  shard.pins[client] = Entry{pin, now + timeout};
  // Clients that never come back would otherwise stay forever: every so many
  // insertions, drop the shard's expired pins (amortised O(1) per insertion).
  if (++shard.inserts % kPurgeEvery == 0) {
    absl::flat_hash_map<Ipv4, Entry>& pins = shard.pins;
    for (auto it = pins.begin(); it != pins.end();) {
      auto cur = it++;
      if (cur->second.expiry <= now) pins.erase(cur);
    }
  }
}

size_t AffinityTable::size() const {
  size_t n = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    n += shard.pins.size();
  }
  return n;
}

std::shared_ptr<const FrontendConfig> BuildFrontendConfig(
    const controller::ServiceRule& rule, LbAlgorithm algorithm,
    std::shared_ptr<FrontendShared> shared, const FrontendConfig* previous) {
  auto config = std::make_shared<FrontendConfig>();
  config->shared = std::move(shared);
  config->algorithm = algorithm;
  config->affinity_timeout = absl::Seconds(rule.affinity_timeout_s);

  absl::flat_hash_map<std::pair<Ipv4, uint16_t>, std::shared_ptr<BackendEntry>> old;
  if (previous != nullptr) {
    for (const auto& entry : previous->backends) old[{entry->ip, entry->port}] = entry;
  }
  bool any_healthy = false;
  for (const controller::Backend& b : rule.backends) any_healthy |= b.healthy;
  for (const controller::Backend& b : rule.backends) {
    std::shared_ptr<BackendEntry> entry;
    if (auto it = old.find({b.ip, b.port}); it != old.end()) {
      entry = it->second;
    } else {
      entry = std::make_shared<BackendEntry>(b.ip, b.port);
    }
    // All unhealthy: the list is taken as given (fail-open is decided upstream).
    if (b.healthy || !any_healthy) config->candidates.push_back(entry.get());
    config->backends.push_back(std::move(entry));
  }
  return config;
}

namespace {

bool Tried(absl::Span<BackendEntry* const> tried, const BackendEntry* b) {
  return std::find(tried.begin(), tried.end(), b) != tried.end();
}

// Scans the candidates from `start` for the first one not yet tried.
BackendEntry* FirstUntriedFrom(const std::vector<BackendEntry*>& candidates, size_t start,
                               absl::Span<BackendEntry* const> tried) {
  const size_t n = candidates.size();
  for (size_t i = 0; i < n; ++i) {
    BackendEntry* b = candidates[(start + i) % n];
    if (!Tried(tried, b)) return b;
  }
  return nullptr;
}

BackendEntry* PickByAlgorithm(const FrontendConfig& config, absl::Span<BackendEntry* const> tried,
                              Rng& rng) {
  const std::vector<BackendEntry*>& candidates = config.candidates;
  const uint32_t n = static_cast<uint32_t>(candidates.size());
  switch (config.algorithm) {
    case LbAlgorithm::kRandom: {
      // Uniform when nothing was tried; retries take the next untried one.
      return FirstUntriedFrom(candidates, rng.Uniform(n), tried);
    }
    case LbAlgorithm::kRoundRobin: {
      uint64_t cursor = config.shared->next_rr.fetch_add(1, std::memory_order_relaxed);
      return FirstUntriedFrom(candidates, cursor % n, tried);
    }
    case LbAlgorithm::kLeastConn: {
      // Start the scan at a random offset so ties spread over the backends.
      const uint32_t start = rng.Uniform(n);
      BackendEntry* best = nullptr;
      uint64_t best_active = 0;
      for (uint32_t i = 0; i < n; ++i) {
        BackendEntry* b = candidates[(start + i) % n];
        if (Tried(tried, b)) continue;
        uint64_t active = b->active.load(std::memory_order_relaxed);
        if (best == nullptr || active < best_active) {
          best = b;
          best_active = active;
        }
      }
      return best;
    }
  }
  return nullptr;
}

}  // namespace

BackendEntry* PickBackend(const FrontendConfig& config, Ipv4 client, absl::Time now,
                          absl::Span<BackendEntry* const> tried, Rng& rng) {
  if (config.candidates.empty()) return nullptr;
  const bool affinity = config.affinity_timeout > absl::ZeroDuration();
  if (affinity) {
    if (std::optional<AffinityTable::Pin> pin = config.shared->affinity.Lookup(client, now)) {
      for (BackendEntry* b : config.candidates) {
        if (b->ip == pin->ip && b->port == pin->port && !Tried(tried, b)) {
          config.shared->affinity.Set(client, *pin, now, config.affinity_timeout);
          return b;
        }
      }
      // The pinned backend left the rule, went down or just failed: re-pick.
    }
  }
  BackendEntry* b = PickByAlgorithm(config, tried, rng);
  if (b != nullptr && affinity) {
    config.shared->affinity.Set(client, {b->ip, b->port}, now, config.affinity_timeout);
  }
  return b;
}

}  // namespace kpx::uring

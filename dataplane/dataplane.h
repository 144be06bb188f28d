// The interface the controller programs: a dataplane receives table diffs and
// reports counters. Implementations: XdpDataplane (bpf), UringProxy (io_uring
// userspace relay), FakeDataplane (tests). Dataplanes never see Kubernetes
// objects, only controller::ServiceRule.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "controller/diff.h"
#include "controller/service_table.h"

namespace kpx::dataplane {

struct BackendStats {
  Ipv4 ip;
  uint16_t port = 0;
  uint64_t active = 0;           // connections open now
  uint64_t total = 0;            // connections completed or open
  uint64_t failed_connects = 0;  // refused / timed out / unreachable
  uint64_t bytes_to_backend = 0;
  uint64_t bytes_to_client = 0;
};

struct FrontendStats {
  controller::FrontendKey frontend;
  uint64_t active = 0;
  uint64_t total = 0;
  uint64_t rejected = 0;  // no usable backend: connection reset at once
  std::vector<BackendStats> backends;
};

struct DataplaneStats {
  std::vector<FrontendStats> frontends;
};

class Dataplane {
 public:
  virtual ~Dataplane() = default;
  virtual std::string_view Name() const = 0;

  // Applies one diff. Must be idempotent per operation (an upsert of a known
  // frontend replaces its rule; removing an unknown frontend is a no-op), so
  // that after an error the reconciler can simply re-send.
  virtual absl::Status Apply(const controller::TableDiff& diff) = 0;

  // Optional head start on the next Apply: `rules` are about to be diffed
  // and most likely upserted. Called on a helper thread while the caller
  // does its own bookkeeping; it returns soon after `stop` is set, and the
  // caller waits for it before its next call into the dataplane. The rules
  // stay valid until it returns. The default does nothing.
  virtual void Prepare(absl::Span<const controller::ServiceRule* const> rules, const std::atomic<bool>& stop) {
    (void)rules;
    (void)stop;
  }

  virtual DataplaneStats Stats() const = 0;

  // The counters of `frontends` only (unknown ones are left out), for the
  // admin API answering about one Service. This default filters Stats(), which
  // is O(all frontends); dataplanes whose Stats() costs per frontend (a map
  // read each) override it with an O(frontends asked) read.
  virtual DataplaneStats StatsOf(absl::Span<const controller::FrontendKey> frontends) const {
    DataplaneStats all = Stats();
    DataplaneStats out;
    for (FrontendStats& f : all.frontends) {
      if (std::find(frontends.begin(), frontends.end(), f.frontend) != frontends.end()) {
        out.frontends.push_back(std::move(f));
      }
    }
    return out;
  }

  // Called once after kpxd's first full sync: removes whatever the dataplane
  // still holds that is not in `desired` (state adopted from a previous kpxd
  // process, e.g. pinned BPF maps). Until then nothing adopted is deleted, so
  // a restart never interrupts traffic. Dataplanes without persistent state
  // need not override it.
  virtual absl::Status Prune(const controller::ServiceTable& desired) {
    (void)desired;
    return absl::OkStatus();
  }
};

}  // namespace kpx::dataplane

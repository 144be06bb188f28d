// PickPreview: what PickBackend() would answer for the next connection of a
// client, without taking it (no round-robin step, no affinity pin): the
// io_uring half of `kpxctl trace`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "controller/base/ipv4.h"
#include "dataplane/uring/backend_picker.h"

namespace kpx::uring {

struct PickPreview {
  enum class Decision { kNoBackend, kAffinity, kRoundRobin, kLeastConn, kRandom };
  Decision decision = Decision::kNoBackend;
  // The backend the next connection gets; null for kRandom (any candidate,
  // uniformly) and kNoBackend. Valid while `config` is held.
  const BackendEntry* backend = nullptr;
  // Backends PickBackend chooses among (healthy ones; all when none is:
  // fail-open).
  std::vector<const BackendEntry*> candidates;
  std::shared_ptr<const FrontendConfig> config;
};
const char* PickDecisionName(PickPreview::Decision d);

PickPreview PreviewPick(std::shared_ptr<const FrontendConfig> config, Ipv4 client, absl::Time now);

}  // namespace kpx::uring

// PickPreview: PickBackend()'s answer, read without side effects.
#include "dataplane/uring/pick_preview.h"

namespace kpx::uring {

const char* PickDecisionName(PickPreview::Decision d) {
  switch (d) {
    case PickPreview::Decision::kNoBackend: return "no_backend";
    case PickPreview::Decision::kAffinity: return "affinity";
    case PickPreview::Decision::kRoundRobin: return "round-robin";
    case PickPreview::Decision::kLeastConn: return "least-conn";
    case PickPreview::Decision::kRandom: return "random";
  }
  return "?";
}

PickPreview PreviewPick(std::shared_ptr<const FrontendConfig> config, Ipv4 client, absl::Time now) {
  PickPreview p;
  p.config = std::move(config);
  const FrontendConfig& c = *p.config;
  for (const BackendEntry* b : c.candidates) p.candidates.push_back(b);
  if (c.candidates.empty()) return p;
  if (c.affinity_timeout > absl::ZeroDuration()) {
    if (auto pin = c.shared->affinity.Lookup(client, now)) {
      for (const BackendEntry* b : c.candidates) {
        if (b->ip == pin->ip && b->port == pin->port) {
          p.decision = PickPreview::Decision::kAffinity;
          p.backend = b;
          return p;
        }
      }
    }
  }
  const size_t n = c.candidates.size();
  switch (c.algorithm) {
    case LbAlgorithm::kRandom:
      p.decision = PickPreview::Decision::kRandom;
      if (n == 1) p.backend = c.candidates[0];
      break;
    case LbAlgorithm::kRoundRobin:
      p.decision = PickPreview::Decision::kRoundRobin;
      p.backend = c.candidates[c.shared->next_rr.load(std::memory_order_relaxed) % n];
      break;
    case LbAlgorithm::kLeastConn: {
      // Ties are broken at random by PickBackend: only a unique minimum is
      // a definite answer.
      p.decision = PickPreview::Decision::kLeastConn;
      const BackendEntry* best = nullptr;
      uint64_t best_active = 0;
      bool tie = false;
      for (const BackendEntry* b : c.candidates) {
        uint64_t a = b->active.load(std::memory_order_relaxed);
        if (best == nullptr || a < best_active) {
          best = b;
          best_active = a;
          tie = false;
        } else if (a == best_active) {
          tie = true;
        }
      }
      if (!tie) p.backend = best;
      break;
    }
  }
  return p;
}

}  // namespace kpx::uring

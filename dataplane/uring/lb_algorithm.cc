// String forms of LbAlgorithm.
#include "dataplane/uring/lb_algorithm.h"

#include "absl/strings/str_cat.h"

namespace kpx::uring {

absl::StatusOr<LbAlgorithm> ParseLbAlgorithm(std::string_view text) {
  if (text == "random") return LbAlgorithm::kRandom;
  if (text == "round-robin") return LbAlgorithm::kRoundRobin;
  if (text == "least-conn") return LbAlgorithm::kLeastConn;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown load-balancing algorithm \"", std::string(text), "\"; use random, round-robin or least-conn"));
}

const char* LbAlgorithmName(LbAlgorithm algorithm) {
  switch (algorithm) {
    case LbAlgorithm::kRandom: return "random";
    case LbAlgorithm::kRoundRobin: return "round-robin";
    case LbAlgorithm::kLeastConn: return "least-conn";
  }
  return "?";
}

}  // namespace kpx::uring

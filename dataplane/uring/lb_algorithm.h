// How the io_uring proxy chooses a backend for a new connection. Parsed from
// the --uring_lb flag / kpx.io annotations as "random|round-robin|least-conn".
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace kpx::uring {

enum class LbAlgorithm { kRandom, kRoundRobin, kLeastConn };

absl::StatusOr<LbAlgorithm> ParseLbAlgorithm(std::string_view text);
const char* LbAlgorithmName(LbAlgorithm algorithm);

}  // namespace kpx::uring

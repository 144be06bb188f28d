// Turns the peer lab's results.jsonl (../shared/peers/peers.sh: one JSON
// object per wrk/iperf3 run) into kpx-bench Measurements of suite "e2e",
// averaging the repetitions, so the lab's numbers share kpx-bench's tables.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "tools/kpx-bench/report.h"

namespace kpx::bench {

struct PeersImport {
  int lines = 0;         // JSON objects read
  int measurements = 0;  // Measurements added
  std::vector<std::string> errors;  // lines the lab marked failed ("error"), as text
};

// Reads `results_jsonl`; the lab's mode becomes the subject, except mode
// "project", which becomes `project_subject` (kpx-xdp, kpx-uring). Adds per
// (subject, test): new-connections / keep-alive req_per_s, p50_ms, p99_ms,
// errors; bulk gbps; per-repetition values in extra. A missing file or a
// line that is not JSON is an error naming the file and line.
absl::StatusOr<PeersImport> ImportPeersResults(const std::filesystem::path& results_jsonl,
                                               const std::string& project_subject, Report* report);

}  // namespace kpx::bench

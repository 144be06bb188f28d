// How kpx-bench's subcommands plug in: each file under tools/kpx-bench/
// defines a Subcommand and registers it with KPX_BENCH_SUBCOMMAND, so adding
// a benchmark never edits main.cc. The Context bounds the run in time and
// carries the shared Report.
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/kpx-bench/report.h"

namespace kpx::bench {

struct Context {
  Report* report = nullptr;
  // Tiny sizes and few repetitions: what the smoke tests run (schema, not timings).
  bool quick = false;
  // The whole run's bound; a subcommand checks TimeLeft() between cases and
  // stops early (with a note in the report) rather than overrun.
  absl::Time deadline = absl::InfiniteFuture();
  std::filesystem::path build_dir;   // holds tools/kpxd, tools/kpx-podserver, ...
  std::filesystem::path source_dir;  // holds tools/lab.sh, config/examples, bench/
  std::filesystem::path peers_dir;   // ../shared/peers (peers.sh), may be absent

  bool TimeLeft() const { return absl::Now() < deadline; }
  absl::Duration Remaining() const { return deadline - absl::Now(); }
};

// Progress on stderr for long runs: "[control] 3/9 (33%) S=10000 ... eta 1m20s".
class Progress {
 public:
  Progress(std::string suite, int total) : suite_(std::move(suite)), total_(total), start_(absl::Now()) {}
  void Step(const std::string& what) {
    ++done_;
    absl::Duration elapsed = absl::Now() - start_;
    absl::Duration eta = done_ > 0 ? elapsed * (total_ - done_) / done_ : absl::ZeroDuration();
    std::fprintf(stderr, "[%s] %d/%d (%d%%) %s  elapsed %s eta %s\n", suite_.c_str(), done_, total_,
                 total_ > 0 ? 100 * done_ / total_ : 100, what.c_str(),
                 absl::FormatDuration(absl::Trunc(elapsed, absl::Seconds(1))).c_str(),
                 absl::FormatDuration(absl::Trunc(eta, absl::Seconds(1))).c_str());
  }

 private:
  std::string suite_;
  int total_;
  int done_ = 0;
  absl::Time start_;
};

struct Subcommand {
  std::string name;
  std::string help;
  int order = 100;  // position in `kpx-bench all`
  // Adds the subcommand's own flags to `cmd`; storage belongs to the
  // subcommand (capture a shared_ptr to an options struct in both lambdas).
  std::function<void(CLI::App* cmd)> add_options;
  // Measures, adds Measurements, declares tables and charts.
  std::function<absl::Status(Context& ctx)> run;
};

std::vector<Subcommand>& Registry();

struct Registrar {
  explicit Registrar(Subcommand (*make)()) { Registry().push_back(make()); }
};

}  // namespace kpx::bench

#define KPX_BENCH_CONCAT_INNER(a, b) a##b
#define KPX_BENCH_CONCAT(a, b) KPX_BENCH_CONCAT_INNER(a, b)
// KPX_BENCH_SUBCOMMAND(MakeLbSubcommand) at namespace scope in the file.
#define KPX_BENCH_SUBCOMMAND(factory) \
  static ::kpx::bench::Registrar KPX_BENCH_CONCAT(kpx_bench_registrar_, __LINE__)(&factory)

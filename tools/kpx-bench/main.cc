// kpx-bench: kpx's datapath and control-plane benchmarks, with the peers
// measured in the same run. `kpx-bench <subcommand>` or `kpx-bench all`;
// output in --out: results.jsonl, summary.md, charts (docs/BENCHMARKS.md).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tools/kpx-bench/report.h"
#include "tools/kpx-bench/subcommand.h"

namespace kpx::bench {

std::vector<Subcommand>& Registry() {
  static auto* registry = new std::vector<Subcommand>();
  return *registry;
}

namespace {

std::filesystem::path SelfDir() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::current_path() : self.parent_path();
}

int Main(int argc, char** argv) {
  std::vector<Subcommand>& subs = Registry();
  std::sort(subs.begin(), subs.end(), [](const Subcommand& a, const Subcommand& b) {
    return a.order != b.order ? a.order < b.order : a.name < b.name;
  });

  CLI::App app{"kpx-bench: kpx's kernel datapath and control-plane benchmarks next to the peers"};
  app.require_subcommand(1);
  std::string out_dir;
  bool quick = false;
  bool no_charts = false;
  double max_minutes = 60;
  std::string build_dir;
  std::string peers_dir;
  app.add_option("--out", out_dir, "output directory (default: bench-results/<UTC time>)");
  app.add_flag("--quick", quick, "tiny sizes, few repetitions: checks the plumbing, not performance");
  app.add_flag("--no-charts", no_charts, "skip gnuplot");
  app.add_option("--max-minutes", max_minutes, "bound for the whole run; cases past it are skipped")
      ->check(CLI::PositiveNumber);
  app.add_option("--build-dir", build_dir, "kpx build directory (default: the one holding kpx-bench)");
  app.add_option("--peers-dir", peers_dir, "the peer lab (default: <source>/../shared/peers)");

  std::vector<CLI::App*> cmds;
  for (Subcommand& s : subs) {
    CLI::App* cmd = app.add_subcommand(s.name, s.help);
    if (s.add_options) s.add_options(cmd);
    cmds.push_back(cmd);
  }
  CLI::App* all_cmd = app.add_subcommand("all", "every subcommand above, in order, with its defaults");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (out_dir.empty()) {
    out_dir = absl::StrCat("bench-results/", absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()));
  }
  Report report(out_dir);
  if (absl::Status st = report.Open(); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 1;
  }
  Context ctx;
  ctx.report = &report;
  ctx.quick = quick;
  ctx.deadline = absl::Now() + absl::Seconds(max_minutes * 60);
  // The binary lives in <build>/tools/kpx-bench/ or <build>/tools/.
  std::filesystem::path self = SelfDir();
  ctx.build_dir = !build_dir.empty() ? std::filesystem::path(build_dir)
                  : self.filename() == "tools" ? self.parent_path()
                                                : self.parent_path().parent_path();
  ctx.source_dir = KPX_SOURCE_DIR;
  if (!peers_dir.empty()) {
    ctx.peers_dir = peers_dir;
  } else {
    // <source>/../shared/peers; from a git worktree (<repo>/../wt/NAME) the
    // nearest ancestor holding shared/peers.
    ctx.peers_dir = ctx.source_dir.parent_path() / "shared" / "peers";
    for (auto p = ctx.source_dir.parent_path(); !std::filesystem::exists(ctx.peers_dir) && p.has_relative_path();
         p = p.parent_path()) {
      if (std::filesystem::exists(p / "shared" / "peers")) ctx.peers_dir = p / "shared" / "peers";
    }
  }

  int rc = 0;
  for (size_t i = 0; i < subs.size(); ++i) {
    if (!all_cmd->parsed() && !cmds[i]->parsed()) continue;
    if (!ctx.TimeLeft()) {
      report.AddNote(absl::StrCat(subs[i].name, ": skipped, --max-minutes reached"));
      continue;
    }
    std::fprintf(stderr, "== kpx-bench %s -> %s\n", subs[i].name.c_str(), out_dir.c_str());
    absl::Status st = subs[i].run(ctx);
    if (!st.ok()) {
      std::fprintf(stderr, "kpx-bench %s: %s\n", subs[i].name.c_str(), std::string(st.message()).c_str());
      report.AddNote(absl::StrCat(subs[i].name, " failed: ", st.message()));
      rc = 1;
    }
  }
  if (!no_charts) {
    if (absl::Status st = report.DrawCharts(); !st.ok()) {
      std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
      rc = 1;
    }
  }
  if (absl::Status st = report.WriteSummary(); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    rc = 1;
  }
  std::fputs(report.RenderMarkdown().c_str(), stdout);
  std::fprintf(stderr, "kpx-bench: results in %s (results.jsonl, summary.md)\n", out_dir.c_str());
  return rc;
}

}  // namespace
}  // namespace kpx::bench

int main(int argc, char** argv) { return kpx::bench::Main(argc, argv); }

// `kpx-bench e2e`: the netns peer lab (../shared/peers/peers.sh) with kpxd
// plugged in through bench/peers_hook.sh, once per kpx dataplane (eBPF and
// io_uring: the lab runs its `project` mode once per invocation), next to
// direct, kube-proxy iptables/nftables and HAProxy; the lab's results.jsonl
// is imported so its numbers get kpx-bench's tables, ratios and chart.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/kpx-bench/peers_import.h"
#include "tools/kpx-bench/proc_util.h"
#include "tools/kpx-bench/subcommand.h"

namespace kpx::bench {
namespace {

namespace fs = std::filesystem;

struct E2eOptions {
  std::vector<std::string> dataplanes = {"xdp", "uring"};
  std::vector<std::string> modes = {"direct", "iptables", "nftables", "haproxy"};
  int duration_s = 10;  // wrk seconds per run (the lab's KPXB_DURATION)
  int reps = 2;
  int iperf_s = 5;
};

// Upper bound for one peers.sh invocation: per mode, sanity + topology
// (~15 s) and 2 wrk tests + iperf3 per repetition (each +1 s settle, +30 s
// wrk/iperf slack the lab allows), doubled for a loaded machine.
absl::Duration Bound(const E2eOptions& o, int modes) {
  int per_mode = 20 + o.reps * (2 * (o.duration_s + 2) + o.iperf_s + 2);
  return absl::Seconds(2 * modes * per_mode + 120);
}

// On the eBPF dataplane the traffic must have taken the BPF path: kpxd's
// verdict counters (saved by the hook's project_stop) count Service packets
// (new_flow, ct_hit, reply); an empty count means the numbers are not XDP's.
std::string XdpEvidence(const fs::path& stats_file, int64_t* packets) {
  *packets = 0;
  std::ifstream in(stats_file);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("xdp_verdicts")) return "no xdp_verdicts in " + stats_file.string();
  std::vector<std::string> parts;
  for (auto it = j["xdp_verdicts"].begin(); it != j["xdp_verdicts"].end(); ++it) {
    if (!it->is_number()) continue;
    int64_t v = it->get<int64_t>();
    if (v > 0) parts.push_back(absl::StrCat(it.key(), "=", v));
    if (it.key() == "new_flow" || it.key() == "ct_hit" || it.key() == "reply") *packets += v;
  }
  return absl::StrJoin(parts, ", ");
}

absl::Status RunPeers(Context& ctx, const E2eOptions& o, const std::string& dp,
                      const std::vector<std::string>& modes, const fs::path& out) {
  fs::path peers = ctx.peers_dir / "peers.sh";
  if (!fs::exists(peers)) return absl::NotFoundError(absl::StrCat(peers.string(), " not found (--peers-dir)"));
  fs::path hook = ctx.source_dir / "bench" / "peers_hook.sh";
  std::vector<std::string> argv = {"env",
                                   "KPX_DATAPLANE=" + dp,
                                   "KPX_BUILD=" + ctx.build_dir.string(),
                                   "PROJECT_HOOK=" + hook.string(),
                                   "KPXB_OUT=" + out.string(),
                                   absl::StrCat("KPXB_DURATION=", o.duration_s),
                                   absl::StrCat("KPXB_REPS=", o.reps),
                                   absl::StrCat("KPXB_IPERF_SECS=", o.iperf_s),
                                   peers.string()};
  for (const auto& m : modes) argv.push_back(m);
  absl::Duration bound = std::min(Bound(o, static_cast<int>(modes.size())), ctx.Remaining() + absl::Minutes(1));
  std::fprintf(stderr, "[e2e] %s (bound %s)\n", absl::StrJoin(argv, " ").c_str(),
               absl::FormatDuration(bound).c_str());
  // The lab's namespaces have fixed names (kpxb-*): one peers.sh at a time on
  // a machine. Another run's lab is waited for (bounded), never removed; a
  // run that lost the race to start (peers.sh refuses, writing nothing) waits
  // again.
  absl::Time wait_until = absl::Now() + std::min(absl::Minutes(15), ctx.Remaining());
  auto busy = [] { return Sh("ip netns list | grep -q '^kpxb-'", absl::Seconds(10)).rc == 0; };
  CmdResult r;
  while (true) {
    bool said = false;
    while (busy()) {
      if (absl::Now() >= wait_until) {
        return absl::UnavailableError("peer lab busy: kpxb-* namespaces of another peers.sh run still exist "
                                      "(if none is running: peers.sh cleanup)");
      }
      if (!said) std::fprintf(stderr, "[e2e] peer lab busy (kpxb-* namespaces exist): waiting up to %s\n",
                              absl::FormatDuration(wait_until - absl::Now()).c_str());
      said = true;
      absl::SleepFor(absl::Seconds(2));
    }
    r = RunCmd(argv, {.timeout = bound, .inherit_output = true});
    if (r.rc == 0 || r.timed_out || fs::exists(out / "results.jsonl") || !busy()) break;
    std::fprintf(stderr, "[e2e] another peers.sh run took the lab first; waiting again\n");
  }
  if (r.timed_out) {
    // SIGKILLed: its EXIT trap did not run; its kpxb-* namespaces are ours
    // (peers.sh refuses to start while any exist).
    RunCmd({peers.string(), "cleanup"}, {.timeout = absl::Minutes(1)});
    return absl::DeadlineExceededError(absl::StrCat("peers.sh (", dp, ") exceeded ",
                                                    absl::FormatDuration(bound)));
  }
  if (r.rc != 0) return absl::InternalError(absl::StrCat("peers.sh (", dp, ") exited ", r.rc));
  return absl::OkStatus();
}

absl::Status RunE2e(Context& ctx, const E2eOptions& opts) {
  if (geteuid() != 0) return absl::FailedPreconditionError("e2e needs root (the peer lab's netns)");
  E2eOptions o = opts;
  if (ctx.quick) {
    // The shortest the lab allows: 1 s runs, one repetition, one pair.
    o = {.dataplanes = {"xdp"}, .modes = {"direct"}, .duration_s = 1, .reps = 1, .iperf_s = 1};
  }
  Progress progress("e2e", static_cast<int>(o.dataplanes.size()));
  absl::Status result = absl::OkStatus();
  std::vector<std::string> subjects = {"direct"};
  for (size_t i = 0; i < o.dataplanes.size(); ++i) {
    const std::string& dp = o.dataplanes[i];
    std::string subject = "kpx-" + dp;
    subjects.push_back(subject);
    if (!ctx.TimeLeft()) {
      ctx.report->AddNote("e2e: " + subject + " skipped, --max-minutes reached");
      continue;
    }
    // The peers ride along with the first invocation.
    std::vector<std::string> modes = {"project"};
    if (i == 0) modes.insert(modes.end(), o.modes.begin(), o.modes.end());
    fs::path out = ctx.report->dir() / ("peers-" + dp);
    fs::remove_all(out);
    absl::Status st = RunPeers(ctx, o, dp, modes, out);
    if (st.ok() || fs::exists(out / "results.jsonl")) {
      auto imported = ImportPeersResults(out / "results.jsonl", subject, ctx.report);
      if (!imported.ok()) {
        st = imported.status();
      } else {
        for (const auto& e : imported->errors) ctx.report->AddNote("e2e: lab error: " + e);
      }
    }
    if (dp == "xdp" && fs::exists(out / "logs" / "kpxd-stats.json")) {
      int64_t packets = 0;
      std::string verdicts = XdpEvidence(out / "logs" / "kpxd-stats.json", &packets);
      ctx.report->AddNote("e2e: kpx-xdp verdict counters after the run: " + verdicts);
      if (packets == 0 && st.ok()) {
        st = absl::InternalError("kpx-xdp: no packet took the BPF path (verdicts: " + verdicts + ")");
      }
    }
    if (!st.ok()) {
      ctx.report->AddNote(absl::StrCat("e2e: ", subject, ": ", st.message()));
      result = st;
    }
    progress.Step(subject);
  }
  for (const auto& m : o.modes) {
    if (m != "direct") subjects.push_back(m);
  }
  std::string method = absl::StrCat(
      "peers.sh in its netns lab (client -> node -> 4 pods); wrk -t2 -c32 for ", o.duration_s, " s x ", o.reps,
      " repetitions (mean shown), iperf3 ", o.iperf_s, " s. direct = client to pod1 without a VIP (one "
      "server, no NAT): a path baseline, not an upper bound.");
  ctx.report->AddTable({.title = "End to end: request rate vs direct", .suite = "e2e", .metric = "req_per_s",
                        .subjects = subjects, .baseline = "direct", .note = method});
  if (std::find(subjects.begin(), subjects.end(), "haproxy") != subjects.end()) {
    ctx.report->AddTable({.title = "End to end: request rate vs HAProxy", .suite = "e2e", .metric = "req_per_s",
                          .subjects = subjects, .baseline = "haproxy"});
  }
  ctx.report->AddTable({.title = "End to end: p99 latency (ms)", .suite = "e2e", .metric = "p99_ms",
                        .subjects = subjects, .baseline = "direct"});
  ctx.report->AddTable({.title = "End to end: bulk throughput (iperf3)", .suite = "e2e", .metric = "gbps",
                        .subjects = subjects, .baseline = "direct"});
  ctx.report->AddTable({.title = "End to end: wrk errors (mean per run)", .suite = "e2e", .metric = "errors",
                        .subjects = subjects});
  ctx.report->AddChart({.file = "e2e-rps.png", .title = "Requests per second by mode", .suite = "e2e",
                        .metric = "req_per_s", .subjects = subjects, .y_label = "req/s"});
  return result;
}

Subcommand MakeE2eSubcommand() {
  auto opts = std::make_shared<E2eOptions>();
  Subcommand s;
  s.name = "e2e";
  s.help = "the netns peer lab (peers.sh): kpx eBPF and io_uring next to direct, iptables, nftables, HAProxy";
  s.order = 90;  // the longest: last in `all`
  s.add_options = [opts](CLI::App* cmd) {
    cmd->add_option("--dataplanes", opts->dataplanes, "kpxd dataplanes: xdp,uring")->delimiter(',');
    cmd->add_option("--modes", opts->modes, "peer modes of peers.sh (direct,iptables,nftables,haproxy,...)")
        ->delimiter(',');
    cmd->add_option("--duration", opts->duration_s, "wrk seconds per run")->check(CLI::PositiveNumber);
    cmd->add_option("--reps", opts->reps, "repetitions per test")->check(CLI::PositiveNumber);
    cmd->add_option("--iperf-seconds", opts->iperf_s, "iperf3 seconds per run")->check(CLI::PositiveNumber);
  };
  s.run = [opts](Context& ctx) { return RunE2e(ctx, *opts); };
  return s;
}

KPX_BENCH_SUBCOMMAND(MakeE2eSubcommand);

}  // namespace
}  // namespace kpx::bench

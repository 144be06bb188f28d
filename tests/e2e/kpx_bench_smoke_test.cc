// `kpx-bench --quick control` and `--quick e2e` end to end (root: netns, BPF,
// the peer lab): every expected subject and metric is in results.jsonl with
// the schema, the tables and charts are written, and what the numbers must
// be by construction holds (eBPF maps exist only for kpx-xdp, the XDP path
// carried the lab's traffic). Timings are not asserted.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testlib/testlib.h"

namespace kpx::bench {
namespace {

using ::testing::HasSubstr;

std::filesystem::path TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  return dir;
}

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> ReadJsonLines(const std::filesystem::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line, nullptr, false));
  return out;
}

void ExpectSchema(const nlohmann::json& j) {
  ASSERT_FALSE(j.is_discarded()) << "a line is not JSON";
  for (const char* key : {"suite", "name", "subject", "metric", "unit", "time"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_string()) << key << " in " << j.dump();
  }
  ASSERT_TRUE(j.contains("value") && j["value"].is_number()) << j.dump();
  EXPECT_GE(j["value"].get<double>(), 0) << j.dump();
  ASSERT_TRUE(j["params"].is_object()) << j.dump();
  ASSERT_TRUE(j["env"].is_object() && j["env"].contains("kernel")) << j.dump();
}

int RunBench(const std::string& args, const std::filesystem::path& log) {
  std::string cmd = kpx::testing::BinaryPath("tools/kpx-bench") + " " + args + " >" + log.string() + " 2>&1";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// (subject, metric) -> value for one suite.
std::map<std::pair<std::string, std::string>, double> Index(const std::vector<nlohmann::json>& lines,
                                                            const std::string& suite) {
  std::map<std::pair<std::string, std::string>, double> out;
  for (const auto& j : lines) {
    if (j["suite"] == suite) out[{j["subject"], j["metric"]}] = j["value"].get<double>();
  }
  return out;
}

TEST(KpxBenchSmokeRoot, ControlQuick) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto dir = TempDir("kpx-bench-control");
  auto log = dir.string() + ".log";
  ASSERT_EQ(RunBench("--quick --max-minutes 10 --out " + dir.string() + " control", log), 0) << ReadFile(log);
  auto lines = ReadJsonLines(dir / "results.jsonl");
  ASSERT_FALSE(lines.empty()) << ReadFile(log);
  for (const auto& j : lines) {
    ExpectSchema(j);
    EXPECT_EQ(j["suite"], "control");
    EXPECT_EQ(j["params"]["S"], "100") << j.dump();
    EXPECT_EQ(j["params"]["E"], "10") << j.dump();
  }
  auto v = Index(lines, "control");
  auto at = [&](const std::string& s, const std::string& m) { return v[{s, m}]; };
  for (const char* s : {"kpx-xdp", "kpx-uring", "iptables-legacy", "iptables-nft", "nftables"}) {
    EXPECT_GT(at(s, "full_s"), 0) << s;
  }
  for (const char* s : {"kpx-xdp", "kpx-xdp-api", "kpx-uring", "kpx-uring-api", "iptables-legacy",
                        "iptables-nft", "nftables"}) {
    EXPECT_GT(at(s, "change_median_ms"), 0) << s;
    EXPECT_GE(at(s, "change_p99_ms"), at(s, "change_median_ms")) << s;
  }
  // Memory: kpxd is a real process; only the eBPF dataplane holds BPF maps.
  EXPECT_GT(at("kpx-xdp", "rss_mib"), 1);
  EXPECT_GT(at("kpx-uring", "rss_mib"), 1);
  EXPECT_GT(at("kpx-xdp", "bpf_map_mib"), 0);
  EXPECT_EQ(at("kpx-uring", "bpf_map_mib"), 0);
  // kpxd's own initial-sync time is part of (so below) exec -> programmed.
  EXPECT_LE(at("kpx-uring", "program_s"), at("kpx-uring", "full_s"));
  for (const auto& j : lines) {
    if (j["metric"] == "change_median_ms") {
      EXPECT_GT(j["extra"]["changes"].get<int>(), 0) << j.dump();
    }
  }
  std::string md = ReadFile(dir / "summary.md");
  EXPECT_THAT(md, HasSubstr("## Control plane: full table from cold start (s)"));
  EXPECT_THAT(md, HasSubstr("kpx-xdp / iptables-legacy"));
  EXPECT_THAT(md, HasSubstr("| endpoint-change (E=10 S=100) |"));
  EXPECT_GT(std::filesystem::file_size(dir / "control-full.png"), 1000u) << ReadFile(dir / "gnuplot.log");
  EXPECT_GT(std::filesystem::file_size(dir / "control-change.png"), 1000u);
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
}

TEST(KpxBenchSmokeRoot, E2eQuick) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  // kpx-bench looks for shared/peers in the source tree's ancestors.
  bool lab = false;
  for (auto p = std::filesystem::path(kpx::testing::SourcePath("")).parent_path(); p.has_relative_path();
       p = p.parent_path()) {
    lab |= std::filesystem::exists(p / "shared" / "peers" / "peers.sh");
  }
  if (!lab) GTEST_SKIP() << "the peer lab (../shared/peers/peers.sh) is not on this machine";
  auto dir = TempDir("kpx-bench-e2e");
  auto log = dir.string() + ".log";
  int rc = RunBench("--quick --max-minutes 8 --out " + dir.string() + " e2e", log);
  if (rc != 0 && ReadFile(log).find("peer lab busy") != std::string::npos) {
    GTEST_SKIP() << "another peers.sh run held the lab (kpxb-* namespaces) for the whole wait";
  }
  ASSERT_EQ(rc, 0) << ReadFile(log);
  auto lines = ReadJsonLines(dir / "results.jsonl");
  for (const auto& j : lines) {
    ExpectSchema(j);
    EXPECT_EQ(j["suite"], "e2e");
  }
  auto v = Index(lines, "e2e");
  auto at = [&](const std::string& s, const std::string& m) { return v[{s, m}]; };
  for (const char* s : {"direct", "kpx-xdp"}) {
    EXPECT_GT(at(s, "req_per_s"), 0) << s;
    EXPECT_GT(at(s, "gbps"), 0) << s;
    EXPECT_TRUE(v.count({s, "p99_ms"}) > 0) << s;
  }
  std::string md = ReadFile(dir / "summary.md");
  EXPECT_THAT(md, HasSubstr("## End to end: request rate vs direct"));
  EXPECT_THAT(md, HasSubstr("kpx-xdp / direct"));
  // The traffic took the BPF path (kpx-bench fails the run otherwise; the
  // counters are in the notes).
  EXPECT_THAT(md, HasSubstr("kpx-xdp verdict counters after the run: "));
  EXPECT_THAT(md, HasSubstr("new_flow="));
  EXPECT_TRUE(std::filesystem::exists(dir / "peers-xdp" / "results.jsonl"));
  EXPECT_GT(std::filesystem::file_size(dir / "e2e-rps.png"), 1000u) << ReadFile(dir / "gnuplot.log");
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
}

}  // namespace
}  // namespace kpx::bench

// kpx-bench's report (JSON line schema, markdown ratios, percentiles) and a
// smoke run of the subcommands that need no privileges, at --quick size:
// the plumbing and the output schema, never the timings.
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
#include "tools/kpx-bench/peers_import.h"
#include "tools/kpx-bench/report.h"

namespace kpx::bench {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::filesystem::path TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
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
  while (std::getline(in, line)) {
    out.push_back(nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false));
  }
  return out;
}

// Every field a consumer of results.jsonl relies on, with its type.
void ExpectSchema(const nlohmann::json& j) {
  ASSERT_FALSE(j.is_discarded()) << "a line is not JSON";
  for (const char* key : {"suite", "name", "subject", "metric", "unit", "time"}) {
    ASSERT_TRUE(j.contains(key) && j[key].is_string()) << key << " in " << j.dump();
    EXPECT_FALSE(j[key].get<std::string>().empty()) << key << " in " << j.dump();
  }
  ASSERT_TRUE(j.contains("value") && j["value"].is_number()) << j.dump();
  ASSERT_TRUE(j.contains("higher_is_better") && j["higher_is_better"].is_boolean()) << j.dump();
  ASSERT_TRUE(j.contains("params") && j["params"].is_object()) << j.dump();
  ASSERT_TRUE(j.contains("env") && j["env"].is_object()) << j.dump();
  for (const char* key : {"kernel", "cpu_model", "kpx_version", "compiler"}) {
    EXPECT_TRUE(j["env"].contains(key)) << key << " in env of " << j.dump();
  }
  EXPECT_TRUE(j["env"]["cpus"].is_number());
}

TEST(KpxBenchReport, JsonLinesCarrySchemaAndEnv) {
  auto dir = TempDir("kpx-bench-report");
  {
    Report r(dir);
    ASSERT_TRUE(r.Open().ok());
    r.Add({.suite = "t", .name = "case", .subject = "kpx", .metric = "req_per_s", .value = 200,
           .unit = "req/s", .higher_is_better = true, .params = {{"S", "10"}}});
  }
  auto lines = ReadJsonLines(dir / "results.jsonl");
  ASSERT_EQ(lines.size(), 1u);
  ExpectSchema(lines[0]);
  EXPECT_EQ(lines[0]["params"]["S"], "10");
  EXPECT_EQ(lines[0]["value"], 200);
  std::filesystem::remove_all(dir);
}

TEST(KpxBenchReport, RatiosAreOrientedSoThatAboveOneIsBetter) {
  auto dir = TempDir("kpx-bench-ratio");
  Report r(dir);
  ASSERT_TRUE(r.Open().ok());
  // Throughput: kpx 300 vs peer 150 -> 2.00x. Latency: kpx 5 ms vs peer 20 ms -> 4.00x.
  r.Add({.suite = "t", .name = "conn", .subject = "peer", .metric = "rate", .value = 150, .unit = "c/s",
         .higher_is_better = true});
  r.Add({.suite = "t", .name = "conn", .subject = "kpx", .metric = "rate", .value = 300, .unit = "c/s",
         .higher_is_better = true});
  r.Add({.suite = "t", .name = "conn", .subject = "peer", .metric = "p99", .value = 20, .unit = "ms"});
  r.Add({.suite = "t", .name = "conn", .subject = "kpx", .metric = "p99", .value = 5, .unit = "ms"});
  // A case only one subject has: shown as "-" for the other, no ratio.
  r.Add({.suite = "t", .name = "only-kpx", .subject = "kpx", .metric = "rate", .value = 1, .unit = "c/s",
         .higher_is_better = true});
  r.AddTable({.title = "Rate", .suite = "t", .metric = "rate", .subjects = {"peer", "kpx"}, .baseline = "peer"});
  r.AddTable({.title = "P99", .suite = "t", .metric = "p99", .subjects = {"peer", "kpx"}, .baseline = "peer"});
  std::string md = r.RenderMarkdown();
  EXPECT_THAT(md, HasSubstr("| conn | 150.0 | 300.0 | 2.00x |"));
  EXPECT_THAT(md, HasSubstr("| conn | 20.00 | 5.000 | 4.00x |"));
  EXPECT_THAT(md, HasSubstr("| only-kpx | - | 1.000 | - |"));
  ASSERT_TRUE(r.WriteSummary().ok());
  EXPECT_EQ(ReadFile(dir / "summary.md"), md);
  std::filesystem::remove_all(dir);
}

TEST(KpxBenchReport, PercentileIsNearestRank) {
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({3, 1, 2}, 50), 2);
  std::vector<double> hundred;
  for (int i = 1; i <= 100; ++i) hundred.push_back(i);
  EXPECT_EQ(Percentile(hundred, 99), 99);
  EXPECT_EQ(Percentile(hundred, 100), 100);
  EXPECT_EQ(Percentile(hundred, 0), 1);
}

// The peer lab's results.jsonl (a checked-in sample from a real run): mode
// "project" becomes the kpx subject, repetitions are averaged, failed lines
// become errors instead of numbers, and the tables get their ratios.
TEST(KpxBenchPeersImport, SampleBecomesE2eMeasurements) {
  auto dir = TempDir("kpx-bench-import");
  Report r(dir);
  ASSERT_TRUE(r.Open().ok());
  auto imported = ImportPeersResults(kpx::testing::SourcePath("tests/unit/testdata/peers/results.jsonl"),
                                     "kpx-xdp", &r);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->lines, 12);
  ASSERT_EQ(imported->errors.size(), 1u);
  EXPECT_THAT(imported->errors[0], HasSubstr("haproxy newconn"));
  auto find = [&](const std::string& subject, const std::string& name, const std::string& metric) {
    for (const Measurement& m : r.measurements()) {
      if (m.subject == subject && m.name == name && m.metric == metric) return m;
    }
    ADD_FAILURE() << "no " << subject << " " << name << " " << metric;
    return Measurement{};
  };
  Measurement rps = find("kpx-xdp", "new-connections", "req_per_s");
  EXPECT_EQ(rps.suite, "e2e");
  EXPECT_TRUE(rps.higher_is_better);
  EXPECT_DOUBLE_EQ(rps.value, (20532.0 + 19532.0) / 2);
  EXPECT_EQ(rps.extra["reps"].size(), 2u);
  EXPECT_DOUBLE_EQ(find("kpx-xdp", "new-connections", "p99_ms").value, (8.62 + 10.62) / 2);
  EXPECT_DOUBLE_EQ(find("kpx-xdp", "new-connections", "errors").value, 1.5);
  EXPECT_DOUBLE_EQ(find("direct", "bulk", "gbps").value, 11.082);
  EXPECT_DOUBLE_EQ(find("kpx-xdp", "keep-alive", "req_per_s").value, 118885.0);
  for (const Measurement& m : r.measurements()) {
    EXPECT_NE(m.subject, "project");
    EXPECT_NE(m.subject, "haproxy");  // its only line failed
    EXPECT_NE(m.subject, "suite");
  }
  r.AddTable({.title = "E2E", .suite = "e2e", .metric = "req_per_s", .subjects = {"direct", "kpx-xdp"},
              .baseline = "direct"});
  // 20032 / 22224.7 = 0.90
  EXPECT_THAT(r.RenderMarkdown(), HasSubstr("| new-connections | 22225 | 20032 | 0.90x |"));
  EXPECT_FALSE(ImportPeersResults(dir / "missing.jsonl", "kpx-xdp", &r).ok());
  {
    std::ofstream bad(dir / "bad.jsonl");
    bad << "{\"mode\":\"direct\",\"test\":\"newconn\"}\nnot json\n";
  }
  auto bad = ImportPeersResults(dir / "bad.jsonl", "kpx-xdp", &r);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bad.jsonl:2"));
  std::filesystem::remove_all(dir);
}

// Runs kpx-bench; returns its exit status.
int RunBench(const std::string& args, const std::filesystem::path& log) {
  std::string cmd = kpx::testing::BinaryPath("tools/kpx-bench") + " " + args + " >" + log.string() + " 2>&1";
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(KpxBenchSmoke, LbQuickRunWritesEveryOutput) {
  auto dir = TempDir("kpx-bench-lb");
  auto log = dir.string() + ".log";
  ASSERT_EQ(RunBench("--quick --out " + dir.string() + " lb", log), 0) << ReadFile(log);
  auto lines = ReadJsonLines(dir / "results.jsonl");
  ASSERT_FALSE(lines.empty());
  std::set<std::string> subjects, metrics;
  for (const auto& j : lines) {
    ExpectSchema(j);
    EXPECT_EQ(j["suite"], "lb");
    subjects.insert(j["subject"].get<std::string>());
    metrics.insert(j["metric"].get<std::string>());
  }
  EXPECT_EQ(subjects, (std::set<std::string>{"random", "round-robin", "least-conn", "hash-mod", "maglev"}));
  EXPECT_TRUE(metrics.count("moved_share") && metrics.count("ns_per_pick") && metrics.count("max_over_min"));
  // Spread and movement are properties of the algorithms, not timings: at
  // --quick size (N=4, 2000 flows) round-robin is exactly even and Maglev
  // moves far fewer flows than hash-mod when a backend goes.
  for (const auto& j : lines) {
    if (j["subject"] == "round-robin" && j["metric"] == "max_over_min") {
      EXPECT_DOUBLE_EQ(j["value"], 1.0);
    }
    if (j["name"] == "remove-one" && j["metric"] == "moved_share") {
      if (j["subject"] == "maglev") {
        EXPECT_LT(j["value"].get<double>(), 0.35);
      }
      if (j["subject"] == "hash-mod") {
        EXPECT_GT(j["value"].get<double>(), 0.6);
      }
    }
  }
  std::string md = ReadFile(dir / "summary.md");
  EXPECT_THAT(md, HasSubstr("## Load balancing: cost of one pick"));
  EXPECT_THAT(md, HasSubstr("maglev / hash-mod"));
  EXPECT_TRUE(std::filesystem::exists(dir / "lb-moved.png")) << ReadFile(dir / "gnuplot.log");
  EXPECT_GT(std::filesystem::file_size(dir / "lb-moved.png"), 1000u);
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
}

TEST(KpxBenchSmoke, BadFlagsExitNonZeroWithUsage) {
  auto dir = TempDir("kpx-bench-bad");
  auto log = dir.string() + ".log";
  EXPECT_NE(RunBench("--out " + dir.string() + " no-such-subcommand", log), 0);
  EXPECT_NE(RunBench("--out " + dir.string() + " lb --backends x", log), 0);
  EXPECT_THAT(ReadFile(log), HasSubstr("--backends"));
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
}

}  // namespace
}  // namespace kpx::bench

// Smoke test of `kpx-bench --quick health` (needs root: it builds the kpxh-
// netns lab, runs kpxd on both dataplanes and HAProxy): every kill is seen
// by every checker, the output has the schema and tables docs/BENCHMARKS.md
// relies on, and nothing of the lab outlives the run. Not the timings.
#include <sys/wait.h>

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
using ::testing::Not;
namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ShellOut(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    pclose(p);
  }
  return out;
}

TEST(KpxBenchHealth, QuickRunMeasuresEveryCheckerAndCleansUp) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  if (std::system("command -v haproxy >/dev/null 2>&1") != 0) GTEST_SKIP() << "haproxy not installed (tools/setup.sh)";
  fs::path dir = fs::temp_directory_path() / ("kpx-bench-health-" + std::to_string(getpid()));
  fs::remove_all(dir);
  const fs::path log = dir.string() + ".log";
  // Bounded: the run's own --max-minutes, and timeout(1) should it hang.
  std::string cmd = "timeout -k 10 600 " + kpx::testing::BinaryPath("tools/kpx-bench") +
                    " --quick --max-minutes 8 --out " + dir.string() + " health >" + log.string() + " 2>&1";
  int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc));
  ASSERT_EQ(WEXITSTATUS(rc), 0) << ReadFile(log);

  std::set<std::string> subjects;
  std::ifstream in(dir / "results.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    for (const char* key : {"suite", "name", "subject", "metric", "unit", "time"}) {
      ASSERT_TRUE(j.contains(key) && j[key].is_string()) << key << " in " << line;
    }
    ASSERT_TRUE(j["value"].is_number()) << line;
    ASSERT_TRUE(j["env"].is_object() && j["env"].contains("kernel")) << line;
    EXPECT_EQ(j["suite"], "health");
    EXPECT_FALSE(j["higher_is_better"].get<bool>()) << line;
    subjects.insert(j["subject"].get<std::string>());
    const std::string name = j["name"], metric = j["metric"];
    if (name == "detection" || name == "recovery") {
      EXPECT_TRUE(metric == "p50_ms" || metric == "p99_ms") << line;
      // Every one of the 3 kills was seen by this checker, both ways, and
      // the samples are what the percentile was taken of.
      EXPECT_EQ(j["extra"]["n"], 3) << line;
      EXPECT_EQ(j["extra"]["missed"], 0) << line;
      ASSERT_EQ(j["extra"]["samples_ms"].size(), 3u) << line;
      double v = j["value"];
      EXPECT_GT(v, 0) << line;
      EXPECT_LE(v, j["extra"]["max_ms"].get<double>()) << line;
      EXPECT_GE(v, j["extra"]["min_ms"].get<double>()) << line;
      EXPECT_TRUE(j["extra"].contains("settings")) << line;
      if (name == "detection" && j["subject"].get<std::string>().rfind("kpx-", 0) == 0) {
        // kpxd's own instants: the verdict precedes programming.
        EXPECT_GE(j["extra"]["verdict_to_programmed_p50_ms"].get<double>(), 0) << line;
      }
    } else {
      EXPECT_EQ(name, "probe CPU") << line;
      EXPECT_EQ(metric, "cpu_pct_per_1k") << line;
      EXPECT_GT(j["value"].get<double>(), 0) << line;
      EXPECT_EQ(j["params"]["backends"], "100") << line;
    }
  }
  EXPECT_GT(lines, 0) << ReadFile(log);
  EXPECT_EQ(subjects, (std::set<std::string>{"kpx-uring", "kpx-uring-aggr", "kpx-xdp", "kpx-xdp-aggr", "haproxy",
                                             "haproxy-aggr", "kpx-checker", "kpxd"}))
      << ReadFile(log);

  std::string md = ReadFile(dir / "summary.md");
  EXPECT_THAT(md, HasSubstr("## Health: p99 latency (ms)"));
  EXPECT_THAT(md, HasSubstr("kpx-xdp-aggr / haproxy"));
  EXPECT_THAT(md, HasSubstr("## Health: probe CPU per 1k backends"));
  EXPECT_THAT(md, Not(HasSubstr("failed")));
  EXPECT_TRUE(fs::exists(dir / "health-latency-p99.png")) << ReadFile(dir / "gnuplot.log");

  // Nothing left: namespaces, pinned maps, processes of the lab.
  EXPECT_EQ(ShellOut("ip netns list | grep -c '^kpxh-'"), "0\n");
  EXPECT_EQ(ShellOut("ls /sys/fs/bpf | grep -c '^kpxh-'"), "0\n");
  EXPECT_FALSE(fs::exists("/run/kpxh-lab"));
  fs::remove_all(dir);
  fs::remove(log);
}

}  // namespace
}  // namespace kpx::bench

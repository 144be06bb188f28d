// Smoke test of `kpx-bench --quick xdp` (root: loads BPF, makes netns): every
// eBPF path gets its per-packet measurement next to the floor program, for
// XDP, tc and live veth frames, in the JSON-lines schema. Not timings.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testlib/testlib.h"

namespace kpx::bench {
namespace {

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(KpxBenchXdpSmoke, QuickRunMeasuresEveryPath) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto dir = std::filesystem::temp_directory_path() / ("kpx-bench-xdp-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string log = dir.string() + ".log";
  std::string cmd = kpx::testing::BinaryPath("tools/kpx-bench") + " --quick --out " + dir.string() + " xdp >" +
                    log + " 2>&1";
  int rc = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << ReadFile(log);

  // (hook, path) -> subjects with an ns_per_pkt value.
  std::map<std::pair<std::string, std::string>, std::set<std::string>> seen;
  std::set<std::string> net, charted;
  std::ifstream in(dir / "results.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << line;
    for (const char* key : {"suite", "name", "subject", "metric", "unit"}) {
      ASSERT_TRUE(j.contains(key) && j[key].is_string()) << key << " in " << line;
    }
    ASSERT_TRUE(j["value"].is_number()) << line;
    ASSERT_TRUE(j["params"].is_object()) << line;
    ASSERT_TRUE(j["env"].is_object() && j["env"].contains("kernel")) << line;
    EXPECT_EQ(j["suite"], "xdp");
    if (j["metric"] == "chart_ns") {  // the chart's series: the hook is the subject
      charted.insert(j["subject"].get<std::string>() + "/" + j["name"].get<std::string>());
      continue;
    }
    ASSERT_TRUE(j["params"]["hook"].is_string()) << line;
    const std::string hook = j["params"]["hook"], name = j["name"], metric = j["metric"];
    if (metric == "ns_per_pkt") {
      EXPECT_GT(j["value"].get<double>(), 0) << line;
      seen[{hook, name}].insert(j["subject"].get<std::string>());
    }
    if (metric == "net_ns_per_pkt") net.insert(hook + "/" + name);
  }
  ASSERT_GT(lines, 0) << ReadFile(log);
  const std::map<std::string, std::string> floor = {{"xdp", "xdp-pass"}, {"tc", "tc-ok"}, {"xdp-live", "xdp-pass"}};
  for (const auto& [hook, floor_name] : floor) {
    for (const char* path : {"pass-non-service", "new-flow", "ct-hit", "reply-first", "reply", "rst-no-backend"}) {
      const std::set<std::string> want = {"kpx", floor_name};
      EXPECT_EQ(seen[std::make_pair(hook, std::string(path))], want) << hook << " " << path;
      EXPECT_TRUE(net.count(hook + "/" + path)) << hook << " " << path;
      EXPECT_TRUE(charted.count(hook + "/" + path)) << hook << " " << path;
    }
  }
  for (const char* hook : {"xdp", "tc"}) {
    for (const char* path : {"pass-non-service-repeat", "ct-hit-repeat"}) {
      EXPECT_EQ(seen[std::make_pair(std::string(hook), std::string(path))].count("kpx"), 1u) << hook << " " << path;
    }
  }
  std::string md = ReadFile(dir / "summary.md");
  EXPECT_THAT(md, ::testing::HasSubstr("eBPF per-packet cost"));
  EXPECT_THAT(md, ::testing::HasSubstr("| ct-hit (flows=64 hook=xdp) |"));
  EXPECT_TRUE(std::filesystem::exists(dir / "xdp-per-packet.png")) << ReadFile(dir / "gnuplot.log");
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
}

}  // namespace
}  // namespace kpx::bench

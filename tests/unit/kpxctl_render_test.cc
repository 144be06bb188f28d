// Golden tests of the `kpxctl render` binary on config/examples, and its
// behaviour on bad input (non-zero exit, the parser's message on stderr).
// Regenerate goldens after an intended change: KPX_UPDATE_GOLDEN=1.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/testlib.h"

namespace {

using ::testing::HasSubstr;

struct RunResult {
  int exit_code = -1;
  std::string out;
};

RunResult RunKpxctl(const std::string& args) {
  std::string cmd = kpx::testing::BinaryPath("tools/kpxctl") + " " + args;
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void ExpectGolden(const std::string& args, const std::string& golden) {
  RunResult r = RunKpxctl(args + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::string path = kpx::testing::SourcePath("tests/unit/testdata/render/" + golden);
  if (std::getenv("KPX_UPDATE_GOLDEN") != nullptr) std::ofstream(path) << r.out;
  EXPECT_EQ(r.out, ReadFile(path)) << "golden " << path << " differs";
}

TEST(KpxctlRender, ExamplesJsonForWorker3) {
  ExpectGolden("render -f " + kpx::testing::SourcePath("config/examples") +
                   " --node-name a4-worker3 -o json",
               "examples_a4-worker3.json");
}

TEST(KpxctlRender, ExamplesJsonForWorker) {
  // Same objects, other node: Local-policy frontends now use 10.244.1.2 only.
  ExpectGolden("render -f " + kpx::testing::SourcePath("config/examples") +
                   " --node-name a4-worker -o json",
               "examples_a4-worker.json");
}

TEST(KpxctlRender, ExamplesTable) {
  ExpectGolden("render -f " + kpx::testing::SourcePath("config/examples") +
                   " --node-name a4-worker3",
               "examples_a4-worker3.txt");
}

TEST(KpxctlRender, BadManifestExitsNonZeroWithLocatedError) {
  char tmpl[] = "/tmp/kpx-render-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string file = std::string(tmpl) + "/svc.yaml";
  std::ofstream(file) << "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n"
                         "  clusterIP: 10.96.0.1\n  ports:\n  - port: 80\n  - name: x\n    port: http\n";
  RunResult r = RunKpxctl("render -f " + file + " --node-name n 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("svc.yaml:10: default/web: spec.ports[1].port: \"http\" is not a port number"));
  std::remove(file.c_str());
  rmdir(tmpl);
}

TEST(KpxctlRender, MissingFileAndMissingNodeName) {
  RunResult r = RunKpxctl("render -f /nonexistent/kpx.yaml --node-name n 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("/nonexistent/kpx.yaml"));
  r = RunKpxctl("render -f " + kpx::testing::SourcePath("config/examples") + " 2>&1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--node-name"));
}

}  // namespace

// Inputs the fuzzers in tests/fuzz found to crash or hang, each with what it
// must do instead (docs/RELIABILITY.md lists them). The fuzz build is not part
// of every developer's loop; these run with the other unit tests.
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "controller/manifest_parser.h"
#include "controller/object_store.h"
#include "controller/table_format.h"
#include "controller/translate.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

using ::testing::HasSubstr;

// manifest_fuzz: a Service name with bytes that are not UTF-8 parsed, and
// TableToJson(...).dump() (kpxctl render, the admin API, kpxd's status file)
// then threw nlohmann's type_error 316 and terminated the process.
TEST(FuzzRegressionTest, ManifestThatIsNotUtf8IsRejectedWithItsLine) {
  const std::string manifest =
      "{\n \"apiVersion\": \"v1\", \"kind\": \"Service\",\n"
      " \"metadata\": {\"name\": \"fl\xA7\x8C\x94\xD2nodeport\", \"namespace\": \"default\"},\n"
      " \"spec\": {\"clusterIP\": \"10.96.7.10\", \"ports\": [{\"port\": 80}]}\n}\n";
  absl::StatusOr<ParseResult> r = ParseManifest(manifest, "np.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("np.json:3: not valid UTF-8 (byte 0xa7)"));
}

// The parser checks the file's bytes only: this pins down that yaml-cpp
// refuses escapes that would decode to something that is not UTF-8.
TEST(FuzzRegressionTest, YamlEscapeThatIsNotUtf8IsRejected) {
  for (const char* escape : {"\\ud800", "\\udfff", "\\U00110000"}) {
    const std::string manifest = std::string("apiVersion: v1\nkind: Service\nmetadata:\n") +
                                 "  name: \"web" + escape + "\"\n" +
                                 "spec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n";
    absl::StatusOr<ParseResult> r = ParseManifest(manifest, "esc.yaml");
    ASSERT_FALSE(r.ok()) << escape;
    EXPECT_THAT(r.status().message(), HasSubstr("esc.yaml:4: invalid YAML")) << escape;
  }
}

}  // namespace
}  // namespace kpx::controller

// libFuzzer target: manifest bytes (YAML or JSON) -> ParseManifest ->
// ObjectStore -> Translate -> Diff. Besides crashes, hangs and sanitizer
// reports, it checks that the pipeline's own invariants hold for whatever
// parsed: Translate is deterministic and Diff against nothing rebuilds the
// table exactly.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "controller/diff.h"
#include "controller/manifest_parser.h"
#include "controller/object_store.h"
#include "controller/table_format.h"
#include "controller/translate.h"
#include "tests/fuzz/fuzz_util.h"

using namespace kpx::controller;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kpx::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view content(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ParseResult> parsed = ParseManifest(content, "fuzz.yaml");
  if (!parsed.ok()) {
    KPX_FUZZ_CHECK(!parsed.status().message().empty(), "an error without a message");
    return 0;
  }
  ObjectStore store;
  store.Replace("fuzz.yaml", std::move(parsed->objects));
  const NodeInfo node{"node-a", "zone-a"};
  TranslateResult first = Translate(store.state(), node);
  TranslateResult again = Translate(store.state(), node);
  KPX_FUZZ_CHECK(first.table == again.table, "Translate is not deterministic");
  KPX_FUZZ_CHECK(TableToJson(first).dump() == TableToJson(again).dump(),
                 "TableToJson is not deterministic");

  ServiceTable rebuilt;
  ApplyDiff(Diff(first.table, rebuilt), &rebuilt);
  KPX_FUZZ_CHECK(rebuilt == first.table, "ApplyDiff(Diff(t, {})) != t");
  KPX_FUZZ_CHECK(Diff(first.table, rebuilt).empty(), "Diff(t, t) is not empty");
  return 0;
}

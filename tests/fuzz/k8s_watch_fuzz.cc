// libFuzzer target: a Kubernetes watch stream (newline-separated JSON events)
// through the K8sApiSource decoding path: ParseWatchLine, DecodeApiObject
// for both watched kinds, then the ObjectStore and Translate as the watcher's
// updates would drive them. Checks that decoding is stable: a decoded object
// decodes again to the same key and content hash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "controller/object_store.h"
#include "controller/source/k8s_api_source.h"
#include "controller/source/k8s_watch_event.h"
#include "controller/translate.h"
#include "tests/fuzz/fuzz_util.h"

using namespace kpx::controller;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kpx::fuzz::QuietLogs();
  return 0;
}

namespace {

struct Kind {
  const char* kind;
  const char* api_version;
};
constexpr Kind kKinds[] = {{"Service", "v1"}, {"EndpointSlice", "discovery.k8s.io/v1"}};

void HandleEvent(const WatchEvent& ev, ObjectStore* store) {
  for (const Kind& k : kKinds) {
    nlohmann::json obj = ev.object;
    ApiObject d = DecodeApiObject(obj, k.kind, k.api_version);
    if (d.objects) {
      KPX_FUZZ_CHECK(!d.key.empty(), "decoded object without a key");
      KPX_FUZZ_CHECK(d.error.empty(), "decoded object with an error");
      ApiObject again = DecodeApiObject(obj, k.kind, k.api_version);
      KPX_FUZZ_CHECK(again.objects.has_value(), "a decoded object fails to decode again");
      KPX_FUZZ_CHECK(again.key == d.key && again.hash == d.hash,
                     "decoding again changes the key or content hash");
    } else {
      KPX_FUZZ_CHECK(!d.error.empty(), "an undecodable object without a reason");
    }
    if (d.key.empty()) continue;
    const std::string source = ApiSourceKey(k.kind, d.id);
    if (ev.type == "DELETED") {
      store->Remove(source);
    } else if (d.objects && (ev.type == "ADDED" || ev.type == "MODIFIED")) {
      store->Replace(source, *std::move(d.objects));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view stream(reinterpret_cast<const char*>(data), size);
  ObjectStore store;
  int events = 0;
  while (!stream.empty() && events < 64) {
    const size_t nl = stream.find('\n');
    const std::string_view line = stream.substr(0, nl);
    stream = nl == std::string_view::npos ? std::string_view() : stream.substr(nl + 1);
    WatchEvent ev = ParseWatchLine(line);
    if (ev.blank) continue;
    ++events;
    if (!ev.error.empty()) {
      KPX_FUZZ_CHECK(ev.type.empty(), "a malformed line with a type");
      continue;
    }
    if (ev.type == "BOOKMARK" || ev.type == "ERROR") {
      (void)JsonStringAt(ev.object, "metadata", "resourceVersion");
      continue;
    }
    HandleEvent(ev, &store);
  }
  (void)Translate(store.state(), NodeInfo{"node-a", "zone-a"});
  return 0;
}

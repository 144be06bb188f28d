// Decoding of API objects and watch-stream lines for K8sApiSource, with the
// manifest parser's object decoders (same field rules and messages).
#include "controller/source/k8s_watch_event.h"

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "controller/manifest_parser.h"
#include "controller/source/k8s_api_source.h"

namespace kpx::controller {

using json = nlohmann::json;

std::string JsonStringAt(const json& j, const char* a, const char* b) {
  if (!j.is_object()) return "";
  auto it = j.find(a);
  if (it == j.end() || !it->is_object()) return "";
  auto jt = it->find(b);
  return jt != it->end() && jt->is_string() ? jt->get<std::string>() : "";
}

ApiObject DecodeApiObject(json& obj, std::string_view kind, std::string_view api_version) {
  ApiObject d;
  if (!obj.is_object() || !obj.contains("metadata") || !obj["metadata"].is_object()) {
    d.error = "object without metadata";  // no key: nothing to name
    return d;
  }
  json& meta = obj["metadata"];
  d.id.name = JsonStringAt(obj, "metadata", "name");
  d.id.ns = JsonStringAt(obj, "metadata", "namespace");
  if (d.id.ns.empty()) d.id.ns = "default";
  if (d.id.name.empty()) {
    d.error = "object without metadata.name";
    return d;
  }
  d.key = d.id.String();
  const std::string source = ApiSourceKey(kind, d.id);
  d.resource_version = JsonStringAt(obj, "metadata", "resourceVersion");
  if (!obj.contains("kind")) obj["kind"] = kind;
  if (!obj.contains("apiVersion")) obj["apiVersion"] = api_version;
  if (obj["kind"] != kind) {
    d.error = absl::StrCat(source, ": unexpected kind ", obj["kind"].dump());
    return d;
  }
  meta.erase("resourceVersion");
  meta.erase("managedFields");
  d.hash = absl::HashOf(obj.dump());
  absl::StatusOr<ObjectSet> set = DecodeObject(obj, SourceRef{source, 0, 0});
  if (!set.ok()) {
    d.error = std::string(set.status().message());
    return d;
  }
  const size_t n = set->services.size() + set->slices.size() + set->endpoints.size();
  if (n != 1) {
    d.error = absl::StrCat(source, ": decoded to ", n, " objects, expected one ",
                           absl::string_view(kind.data(), kind.size()));
    return d;
  }
  for (Service& s : set->services) s.meta.resource_version = d.resource_version;
  for (EndpointSlice& s : set->slices) s.meta.resource_version = d.resource_version;
  d.objects = std::move(set).value();
  return d;
}

WatchEvent ParseWatchLine(std::string_view text) {
  WatchEvent ev;
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty()) {
    ev.blank = true;
    return ev;
  }
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string() || !j.contains("object")) {
    ev.error = absl::StrCat("watch line is not an event (", text.size(), " bytes: ",
                            absl::string_view(text.data(), std::min<size_t>(text.size(), 80)),
                            ")");
    return ev;
  }
  ev.type = j["type"].get<std::string>();
  ev.object = std::move(j["object"]);
  return ev;
}

}  // namespace kpx::controller

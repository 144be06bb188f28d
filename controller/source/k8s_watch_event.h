// What the Kubernetes API server sends, decoded: one object (a list item or a
// watch event's object) and one line of a watch stream. Pure functions: the
// K8sApiSource watchers use them, and tests/fuzz/k8s_watch_fuzz.cc feeds them
// arbitrary bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "controller/objects.h"

namespace kpx::controller {

// One decoded API object of a known kind.
struct ApiObject {
  std::string key;  // "ns/name"; "" when the object has no metadata.name
  NamespacedName id;
  // Hash of the object minus resourceVersion and managedFields: a relist or
  // an event that changes only those is not a change.
  uint64_t hash = 0;
  std::string resource_version;
  std::optional<ObjectSet> objects;  // exactly one object of `kind`, or nullopt ...
  std::string error;                 // ... and why
};

// Decodes `obj` as an object of `kind` (Service or EndpointSlice). Fills in
// kind and apiVersion when missing (list items carry none) and erases
// metadata.resourceVersion and metadata.managedFields from `obj`.
ApiObject DecodeApiObject(nlohmann::json& obj, std::string_view kind,
                          std::string_view api_version);

// One line of a watch stream ({"type": ..., "object": ...}).
struct WatchEvent {
  bool blank = false;   // nothing but whitespace: skip it
  std::string error;    // not an event (names the start of the line); skip it
  std::string type;     // ADDED, MODIFIED, DELETED, BOOKMARK, ERROR, or unknown
  nlohmann::json object;
};
// Trailing '\r' and spaces are ignored.
WatchEvent ParseWatchLine(std::string_view line);

// j[a][b] when it is a string, else "".
std::string JsonStringAt(const nlohmann::json& j, const char* a, const char* b);

}  // namespace kpx::controller

// Decodes manifest files (YAML multi-document, JSON, `kind: List`) into the
// object model. Errors name file, line, object and field, e.g.
//   svc.yaml:14: default/web: spec.ports[1].port: "http" is not a port number
// and never abort the process: a bad file yields a Status and no objects.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "controller/objects.h"
#include "nlohmann/json_fwd.hpp"

namespace kpx::controller {

struct ParseResult {
  ObjectSet objects;
  std::vector<std::string> warnings;                 // e.g. duplicate objects (last wins)
  absl::btree_map<std::string, int> ignored_kinds;   // "apps/v1/Deployment" -> count
  int documents = 0;                                 // non-empty documents seen
};

// `filename` is used only in messages.
absl::StatusOr<ParseResult> ParseManifest(std::string_view content, std::string_view filename);

// Reads and parses one file; NotFound/PermissionDenied name the path.
absl::StatusOr<ParseResult> ParseManifestFile(const std::string& path);

// Decodes one object as the API server sends it (a watch event's object, or a
// list item with kind and apiVersion filled in) with the same field rules and
// messages as a manifest; `source.file` names it in messages. Kinds other than
// Service, EndpointSlice and Endpoints yield an empty set.
absl::StatusOr<ObjectSet> DecodeObject(const nlohmann::json& object, const SourceRef& source);

}  // namespace kpx::controller

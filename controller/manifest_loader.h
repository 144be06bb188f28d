// One-shot loading of manifest files and directories into an ObjectStore, for
// `kpxctl render` and tests. (kpxd's live source is source/manifest_dir_source.h.)
#pragma once

#include <string>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "controller/object_store.h"

namespace kpx::controller {

struct LoadedManifests {
  ObjectStore store;
  std::vector<std::string> warnings;
  absl::btree_map<std::string, int> ignored_kinds;
  int files = 0;
};

// Parses every file (directories expand to their manifest files, sorted). The
// first bad file fails the whole load with its parser error.
absl::StatusOr<LoadedManifests> LoadManifests(const std::vector<std::string>& paths);

}  // namespace kpx::controller

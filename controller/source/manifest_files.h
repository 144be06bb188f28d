// Which files in a manifest directory are manifests, shared by `kpxctl render`
// (one-shot listing) and kpxd's inotify source (live updates).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace kpx::controller {

// *.yaml, *.yml, *.json; not hidden files (".x.yaml", editors' ".x.swp") nor
// backups ("x.yaml~"), nor temp files editors write before renaming.
bool IsManifestFileName(std::string_view name);

// The manifest files directly in `dir` (not recursive, like `kubectl -f DIR`),
// sorted by name. Error names the directory.
absl::StatusOr<std::vector<std::string>> ListManifestFiles(const std::string& dir);

// Expands files and directories given with -f into manifest file paths, in
// argument order (each directory's files sorted).
absl::StatusOr<std::vector<std::string>> ExpandManifestPaths(const std::vector<std::string>& paths);

}  // namespace kpx::controller

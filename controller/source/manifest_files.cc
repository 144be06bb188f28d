// Manifest file selection and directory listing.
#include "controller/source/manifest_files.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kpx::controller {

bool IsManifestFileName(std::string_view name) {
  if (name.empty() || name.front() == '.' || name.front() == '#') return false;
  return name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json");
}

absl::StatusOr<std::vector<std::string>> ListManifestFiles(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": cannot list directory: ", ec.message()));
  std::vector<std::string> files;
  for (const auto& entry : it) {
    std::string name = entry.path().filename().string();
    if (!IsManifestFileName(name)) continue;
    std::error_code type_ec;
    if (!entry.is_regular_file(type_ec)) continue;
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<std::vector<std::string>> ExpandManifestPaths(
    const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    auto status = std::filesystem::status(p, ec);
    if (ec || !std::filesystem::exists(status)) {
      return absl::NotFoundError(absl::StrCat(p, ": no such file or directory"));
    }
    if (std::filesystem::is_directory(status)) {
      auto files = ListManifestFiles(p);
      if (!files.ok()) return files.status();
      out.insert(out.end(), files->begin(), files->end());
    } else {
      out.push_back(p);
    }
  }
  return out;
}

}  // namespace kpx::controller

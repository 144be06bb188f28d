// LoadManifests: ExpandManifestPaths + ParseManifestFile + ObjectStore.
#include "controller/manifest_loader.h"

#include "controller/base/status_macros.h"
#include "controller/manifest_parser.h"
#include "controller/source/manifest_files.h"

namespace kpx::controller {

absl::StatusOr<LoadedManifests> LoadManifests(const std::vector<std::string>& paths) {
  LoadedManifests out;
  KPX_ASSIGN_OR_RETURN(std::vector<std::string> files, ExpandManifestPaths(paths));
  for (const std::string& file : files) {
    KPX_ASSIGN_OR_RETURN(ParseResult parsed, ParseManifestFile(file));
    for (auto& w : parsed.warnings) out.warnings.push_back(std::move(w));
    for (const auto& [kind, n] : parsed.ignored_kinds) out.ignored_kinds[kind] += n;
    out.store.Replace(file, std::move(parsed.objects));
    ++out.files;
  }
  for (auto& w : out.store.TakeWarnings()) out.warnings.push_back(std::move(w));
  return out;
}

}  // namespace kpx::controller

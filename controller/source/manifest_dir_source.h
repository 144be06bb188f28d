// ManifestDirSource: watches a manifest directory with inotify and turns file
// changes into per-file object updates. A file that fails to parse keeps its
// previous objects (the error is logged and counted); working rules are never
// removed because of a broken file. Editors' temp files are ignored, writes are
// picked up on close or rename (so a partial write is never read as final), and
// ConfigMap-style `..data` symlink swaps trigger a rescan.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/manifest_parser.h"
#include "controller/objects.h"

namespace kpx::controller {

struct SourceUpdate {
  enum class Kind { kReplace, kRemove };
  Kind kind = Kind::kReplace;
  std::string source;  // file path
  ObjectSet objects;   // kReplace only
  absl::Time observed; // when the change was seen (for programming latency)
};

struct ManifestDirStats {
  uint64_t parse_errors = 0;
  uint64_t updates = 0;
  // file -> its current parse error; healthy files are absent, so kpxd's
  // status (written after every change) costs O(broken files), not O(files).
  std::map<std::string, std::string> file_errors;
};

class ManifestDirSource {
 public:
  static absl::StatusOr<std::unique_ptr<ManifestDirSource>> Create(const std::string& dir);
  ~ManifestDirSource();
  ManifestDirSource(const ManifestDirSource&) = delete;
  ManifestDirSource& operator=(const ManifestDirSource&) = delete;

  // The inotify descriptor; poll it for POLLIN, then call ReadEvents().
  int fd() const { return fd_; }

  // Parses every manifest file now (start-up, queue overflow, `..data` swap).
  // Files whose content did not change produce no update.
  std::vector<SourceUpdate> Rescan();

  // Reads pending inotify events (non-blocking) and returns the resulting
  // updates, at most one per file.
  std::vector<SourceUpdate> ReadEvents();

  const ManifestDirStats& stats() const { return stats_; }
  size_t loaded_files() const { return loaded_.size(); }
  const std::string& dir() const { return dir_; }

 private:
  ManifestDirSource(std::string dir, int fd) : dir_(std::move(dir)), fd_(fd) {}
  // Parses one file into an update; nothing when unchanged or unparsable.
  // Prepare (read, hash, parse) only reads this object, so Rescan runs it on
  // several threads; Commit applies the result.
  struct Prepared {
    bool exists = false;
    bool unchanged = false;
    uint64_t hash = 0;
    absl::StatusOr<ParseResult> parsed = absl::UnknownError("not parsed");
  };
  Prepared Prepare(const std::string& path) const;
  void Commit(const std::string& path, Prepared p, absl::Time observed, std::vector<SourceUpdate>* out);
  void Load(const std::string& path, absl::Time observed, std::vector<SourceUpdate>* out);
  void Forget(const std::string& path, absl::Time observed, std::vector<SourceUpdate>* out);

  std::string dir_;
  int fd_ = -1;
  // path -> hash of the content last turned into an update
  std::map<std::string, uint64_t> loaded_;
  ManifestDirStats stats_;
};

}  // namespace kpx::controller

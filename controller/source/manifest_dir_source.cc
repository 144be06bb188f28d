// inotify-driven manifest directory source.
#include "controller/source/manifest_dir_source.h"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "controller/manifest_parser.h"
#include "controller/source/manifest_files.h"
#include "glog/logging.h"

namespace kpx::controller {
namespace {

constexpr uint32_t kWatchMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

std::optional<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ManifestDirSource>> ManifestDirSource::Create(
    const std::string& dir) {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("inotify_init1: ", strerror(errno)));
  if (inotify_add_watch(fd, dir.c_str(), kWatchMask) < 0) {
    int err = errno;
    close(fd);
    return absl::NotFoundError(
        absl::StrCat("--manifest-dir ", dir, ": cannot watch: ", strerror(err)));
  }
  return std::unique_ptr<ManifestDirSource>(new ManifestDirSource(dir, fd));
}

ManifestDirSource::~ManifestDirSource() {
  if (fd_ >= 0) close(fd_);
}

void ManifestDirSource::Load(const std::string& path, absl::Time observed,
                             std::vector<SourceUpdate>* out) {
  std::optional<std::string> content = ReadWhole(path);
  if (!content) {
    // Vanished between the event and the read: a later event says what happened.
    return;
  }
  uint64_t hash = absl::HashOf(*content);
  auto it = loaded_.find(path);
  if (it != loaded_.end() && it->second == hash && stats_.file_errors[path].empty()) return;
  absl::StatusOr<ParseResult> parsed = ParseManifest(*content, path);
  if (!parsed.ok()) {
    ++stats_.parse_errors;
    stats_.file_errors[path] = std::string(parsed.status().message());
    LOG(ERROR) << parsed.status().message()
               << (it != loaded_.end() ? " (keeping this file's previous objects)"
                                       : " (file ignored until fixed)");
    return;
  }
  for (const std::string& w : parsed->warnings) LOG(WARNING) << w;
  stats_.file_errors[path] = "";
  loaded_[path] = hash;
  ++stats_.updates;
  out->push_back({SourceUpdate::Kind::kReplace, path, std::move(parsed->objects), observed});
}

void ManifestDirSource::Forget(const std::string& path, absl::Time observed,
                               std::vector<SourceUpdate>* out) {
  stats_.file_errors.erase(path);
  if (loaded_.erase(path) == 0) return;
  ++stats_.updates;
  out->push_back({SourceUpdate::Kind::kRemove, path, {}, observed});
}

std::vector<SourceUpdate> ManifestDirSource::Rescan() {
  absl::Time now = absl::Now();
  std::vector<SourceUpdate> out;
  absl::StatusOr<std::vector<std::string>> files = ListManifestFiles(dir_);
  if (!files.ok()) {
    LOG(ERROR) << files.status().message() << " (keeping current objects)";
    return out;
  }
  std::set<std::string> present(files->begin(), files->end());
  std::vector<std::string> gone;
  for (const auto& [path, hash] : loaded_) {
    if (!present.contains(path)) gone.push_back(path);
  }
  for (const std::string& path : gone) Forget(path, now, &out);
  for (const std::string& path : *files) Load(path, now, &out);
  return out;
}

std::vector<SourceUpdate> ManifestDirSource::ReadEvents() {
  absl::Time now = absl::Now();
  // Collapse a burst of events into one action per file, in first-seen order.
  std::vector<std::string> order;
  std::map<std::string, bool> exists;  // path -> last event says it exists
  bool rescan = false;
  alignas(struct inotify_event) char buf[16384];
  for (;;) {
    ssize_t n = read(fd_, buf, sizeof(buf));
    if (n <= 0) break;  // EAGAIN: drained
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<struct inotify_event*>(p);
      p += sizeof(struct inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        rescan = true;
        continue;
      }
      if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        LOG(ERROR) << "manifest directory " << dir_
                   << " was removed or moved; keeping current rules";
        continue;
      }
      if (ev->len == 0) continue;
      std::string name = ev->name;
      // Kubernetes ConfigMap volumes publish by swapping the `..data` symlink.
      if (name == "..data") {
        rescan = true;
        continue;
      }
      if (!IsManifestFileName(name)) continue;  // editor temp/backup files
      std::string path = dir_ + "/" + name;
      if (ev->mask & IN_CREATE) {
        // A new regular file's content arrives with IN_CLOSE_WRITE (never read
        // a partial write); a new symlink is complete at once.
        struct stat st;
        if (lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) continue;
      }
      if (!exists.contains(path)) order.push_back(path);
      exists[path] = (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)) != 0;
    }
  }
  if (rescan) return Rescan();
  std::vector<SourceUpdate> out;
  for (const std::string& path : order) {
    if (exists[path]) {
      Load(path, now, &out);
    } else {
      Forget(path, now, &out);
    }
  }
  return out;
}

}  // namespace kpx::controller

// inotify-driven manifest directory source.
#include "controller/source/manifest_dir_source.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "controller/manifest_parser.h"
#include "controller/source/manifest_files.h"
#include "glog/logging.h"

namespace kpx::controller {
namespace {

// Below this many files per thread, starting threads costs more than it saves.
constexpr size_t kFilesPerThread = 64;

constexpr uint32_t kWatchMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

// The file's bytes; nullopt when it cannot be opened (gone, or not readable)
// or read (the file's previous objects stay: a read error must not look like
// a shorter file). Read straight into the string at the size fstat gives
// (an ifstream copy through its buffer was ~20% slower over 10k small files).
std::optional<std::string> ReadWhole(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st;
  std::string out(fstat(fd, &st) == 0 && st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 4096, '\0');
  size_t len = 0;
  for (;;) {
    if (len == out.size()) out.resize(out.size() * 2);
    const ssize_t n = read(fd, out.data() + len, out.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      LOG(WARNING) << "reading " << path << ": " << strerror(errno) << " (keeping its previous objects)";
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  close(fd);
  out.resize(len);
  return out;
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

ManifestDirSource::Prepared ManifestDirSource::Prepare(const std::string& path) const {
  Prepared p;
  std::optional<std::string> content = ReadWhole(path);
  if (!content) return p;  // vanished between the event and the read: a later event says what happened
  p.exists = true;
  p.hash = absl::HashOf(*content);
  auto it = loaded_.find(path);
  p.unchanged = it != loaded_.end() && it->second == p.hash && !stats_.file_errors.contains(path);
  if (!p.unchanged) p.parsed = ParseManifest(*content, path);
  return p;
}

void ManifestDirSource::Commit(const std::string& path, Prepared p, absl::Time observed,
                               std::vector<SourceUpdate>* out) {
  if (!p.exists || p.unchanged) return;
  if (!p.parsed.ok()) {
    ++stats_.parse_errors;
    stats_.file_errors[path] = std::string(p.parsed.status().message());
    LOG(ERROR) << p.parsed.status().message()
               << (loaded_.contains(path) ? " (keeping this file's previous objects)"
                                          : " (file ignored until fixed)");
    return;
  }
  for (const std::string& w : p.parsed->warnings) LOG(WARNING) << w;
  stats_.file_errors.erase(path);
  loaded_[path] = p.hash;
  ++stats_.updates;
  out->push_back({SourceUpdate::Kind::kReplace, path, std::move(p.parsed->objects), observed});
}

void ManifestDirSource::Load(const std::string& path, absl::Time observed,
                             std::vector<SourceUpdate>* out) {
  Commit(path, Prepare(path), observed, out);
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
  // Reading and parsing dominate a start with many files (yaml-cpp: ~0.2 ms
  // of CPU per Service manifest), and files are independent: spread them over
  // the CPUs. Results are committed in name order, as a serial scan would.
  std::vector<Prepared> prepared(files->size());
  const size_t threads = std::min<size_t>(
      std::max(1u, std::thread::hardware_concurrency()), files->size() / kFilesPerThread);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < files->size();) prepared[i] = Prepare((*files)[i]);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  for (size_t i = 0; i < files->size(); ++i) Commit((*files)[i], std::move(prepared[i]), now, &out);
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

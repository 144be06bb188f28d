// Writes a small file (kpxd's --status-file) off the caller's thread: the
// reconcile loop posts the newest content and never waits on the disk; a
// slow or stalled filesystem delays the file, not health changes or rules.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kpx {

class LatestFileWriter {
 public:
  // `write` does the I/O (default: write path.tmp, then rename over path, so
  // readers see a whole file); it runs on the writer's own thread.
  using WriteFn = std::function<void(const std::string& path, const std::string& content)>;
  explicit LatestFileWriter(std::string path, WriteFn write = nullptr);
  // Writes what is still pending, then stops.
  ~LatestFileWriter();
  LatestFileWriter(const LatestFileWriter&) = delete;
  LatestFileWriter& operator=(const LatestFileWriter&) = delete;

  // Never blocks on I/O. Content equal to the last posted one is dropped;
  // content posted while a write is in progress replaces any older pending one.
  void Post(std::string content);
  // Writes done so far (tests).
  uint64_t writes() const;

  static void AtomicWrite(const std::string& path, const std::string& content);

 private:
  void Run();

  const std::string path_;
  const WriteFn write_;
  mutable absl::Mutex mu_;
  std::optional<std::string> pending_ ABSL_GUARDED_BY(mu_);
  std::string last_posted_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace kpx

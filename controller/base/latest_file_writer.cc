// LatestFileWriter: one thread, one pending slot, latest content wins.
#include "controller/base/latest_file_writer.h"

#include <pthread.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include <glog/logging.h>

namespace kpx {

LatestFileWriter::LatestFileWriter(std::string path, WriteFn write)
    : path_(std::move(path)), write_(write ? std::move(write) : WriteFn(&AtomicWrite)) {
  thread_ = std::thread([this] { Run(); });
  pthread_setname_np(thread_.native_handle(), "kpx-status");
}

LatestFileWriter::~LatestFileWriter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void LatestFileWriter::Post(std::string content) {
  absl::MutexLock lock(&mu_);
  if (content == last_posted_) return;
  last_posted_ = content;
  pending_ = std::move(content);
}

uint64_t LatestFileWriter::writes() const {
  absl::MutexLock lock(&mu_);
  return writes_;
}

void LatestFileWriter::Run() {
  while (true) {
    std::string content;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](LatestFileWriter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) {
            return w->stop_ || w->pending_.has_value();
          },
          this));
      if (!pending_.has_value()) return;  // stopping, nothing left to write
      content = std::move(*pending_);
      pending_.reset();
    }
    write_(path_, content);
    absl::MutexLock lock(&mu_);
    ++writes_;
  }
}

void LatestFileWriter::AtomicWrite(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    if (!out) {
      LOG(WARNING) << "cannot write " << tmp << ": " << std::strerror(errno);
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    LOG(WARNING) << "cannot rename " << tmp << " to " << path << ": " << std::strerror(errno);
  }
}

}  // namespace kpx

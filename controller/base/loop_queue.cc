// LoopQueue over an eventfd.
#include "controller/base/loop_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <memory>

#include "absl/synchronization/notification.h"

namespace kpx {

LoopQueue::LoopQueue() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

LoopQueue::~LoopQueue() {
  if (fd_ >= 0) close(fd_);
}

void LoopQueue::Post(std::function<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(fn));
  }
  uint64_t one = 1;
  (void)!write(fd_, &one, sizeof(one));
}

bool LoopQueue::RunSync(std::function<void()> fn, absl::Duration timeout) {
  auto done = std::make_shared<absl::Notification>();
  Post([fn = std::move(fn), done] {
    fn();
    done->Notify();
  });
  return done->WaitForNotificationWithTimeout(timeout);
}

void LoopQueue::RunPending() {
  uint64_t n;
  (void)!read(fd_, &n, sizeof(n));
  std::deque<std::function<void()>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(pending_);
  }
  for (auto& fn : batch) fn();
}

}  // namespace kpx

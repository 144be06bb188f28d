// LoopQueue: hands closures from any thread to the single reconcile loop, which
// polls fd() and calls RunPending(). The reconciler and its tables are owned by
// that loop; health callbacks, the API watch and the admin API reach them only
// through here.
#pragma once

#include <deque>
#include <functional>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kpx {

class LoopQueue {
 public:
  LoopQueue();
  ~LoopQueue();
  LoopQueue(const LoopQueue&) = delete;
  LoopQueue& operator=(const LoopQueue&) = delete;

  int fd() const { return fd_; }  // eventfd: readable when closures are pending

  void Post(std::function<void()> fn);
  // Posts `fn` and waits until the loop ran it. False on timeout (fn may still
  // run later, so it must only touch state it owns or that outlives it).
  bool RunSync(std::function<void()> fn, absl::Duration timeout);

  // Loop side: runs every closure posted so far.
  void RunPending();

 private:
  int fd_ = -1;
  absl::Mutex mu_;
  std::deque<std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kpx

// ParallelRanges: splits [0, n) into one contiguous range per thread and
// runs fn(lo, hi) on each, the calling thread taking the first; returns when
// all are done. For a big batch of independent, pure pieces of work (a cold
// start's translation, Maglev table writes); small n runs inline.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace kpx {

// threads 0: one per CPU. Ranges are disjoint, so fn may write per-index
// results without locking.
inline void ParallelRanges(size_t n, unsigned threads, absl::FunctionRef<void(size_t, size_t)> fn) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  if (n == 0) return;
  if (threads <= 1 || n == 1) {
    fn(0, n);
    return;
  }
  const size_t per = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (size_t lo = per; lo < n; lo += per) pool.emplace_back([fn, lo, hi = std::min(n, lo + per)] { fn(lo, hi); });
  fn(0, std::min(n, per));
  for (std::thread& t : pool) t.join();
}

}  // namespace kpx

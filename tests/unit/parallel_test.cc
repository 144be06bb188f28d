// ParallelRanges covers [0, n) exactly once, in disjoint ranges, whatever n
// and the thread count, and runs the first range on the calling thread.
#include "controller/base/parallel.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kpx {
namespace {

TEST(ParallelRanges, EveryIndexExactlyOnce) {
  for (size_t n : {0, 1, 2, 3, 7, 256, 1001}) {
    for (unsigned threads : {0u, 1u, 2u, 3u, 8u}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> calls{0};
      ParallelRanges(n, threads, [&](size_t lo, size_t hi) {
        ++calls;
        EXPECT_LT(lo, hi);
        for (size_t i = lo; i < hi; ++i) ++hits[i];
      });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " threads=" << threads << " i=" << i;
      if (n == 0) {
        EXPECT_EQ(calls.load(), 0);
      }
      if (threads == 1 && n > 0) {
        EXPECT_EQ(calls.load(), 1);
      }
    }
  }
}

TEST(ParallelRanges, CallerRunsTheFirstRange) {
  const std::thread::id me = std::this_thread::get_id();
  std::thread::id first;
  ParallelRanges(100, 4, [&](size_t lo, size_t) {
    if (lo == 0) first = std::this_thread::get_id();
  });
  EXPECT_EQ(first, me);
}

}  // namespace
}  // namespace kpx

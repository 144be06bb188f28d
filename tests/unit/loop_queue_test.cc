// LoopQueue: closures posted from other threads run on the loop, in order.
#include "controller/base/loop_queue.h"

#include <poll.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kpx {
namespace {

TEST(LoopQueue, PostedClosuresRunOnTheLoopInOrder) {
  LoopQueue q;
  std::vector<int> seen;
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i) q.Post([&seen, i] { seen.push_back(i); });
  });
  poster.join();
  pollfd p{q.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, 1000), 1);
  q.RunPending();
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_EQ(poll(&p, 1, 0), 0);  // drained: not readable any more
}

TEST(LoopQueue, RunSyncWaitsForTheLoopAndTimesOut) {
  LoopQueue q;
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop) {
      pollfd p{q.fd(), POLLIN, 0};
      if (poll(&p, 1, 10) == 1) q.RunPending();
    }
  });
  int value = 0;
  EXPECT_TRUE(q.RunSync([&] { value = 42; }, absl::Seconds(5)));
  EXPECT_EQ(value, 42);
  stop = true;
  loop.join();
  // No loop running: RunSync gives up after the timeout.
  EXPECT_FALSE(q.RunSync([] {}, absl::Milliseconds(50)));
  q.RunPending();  // runs the abandoned closure; it must still be safe
}

}  // namespace
}  // namespace kpx

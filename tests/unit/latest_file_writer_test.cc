// LatestFileWriter: Post never waits for a stalled write, the newest content
// wins, duplicates are skipped, and destruction flushes what is pending.
#include "controller/base/latest_file_writer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace kpx {
namespace {

TEST(LatestFileWriterTest, PostDoesNotWaitForAStalledWriteAndLatestWins) {
  absl::Notification release;
  absl::Mutex mu;
  std::vector<std::string> written;
  std::atomic<int> started{0};
  {
    LatestFileWriter w("unused", [&](const std::string&, const std::string& content) {
      ++started;
      release.WaitForNotification();  // the "disk" hangs until the test says so
      absl::MutexLock lock(&mu);
      written.push_back(content);
    });
    w.Post("a");
    // Wait (bounded) until the writer is stuck inside the first write.
    for (int i = 0; i < 5000 && started.load() == 0; ++i) usleep(1000);
    ASSERT_EQ(started.load(), 1);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; ++i) w.Post("v" + std::to_string(i));
    auto took = std::chrono::steady_clock::now() - t0;
    // 1000 posts against a hung write: bounded by memory ops, not the write.
    EXPECT_LT(took, std::chrono::seconds(2));
    EXPECT_EQ(w.writes(), 0u);
    release.Notify();
  }  // destructor flushes the pending "v999"
  absl::MutexLock lock(&mu);
  ASSERT_EQ(written.size(), 2u);
  EXPECT_EQ(written[0], "a");
  EXPECT_EQ(written[1], "v999");
}

TEST(LatestFileWriterTest, DuplicatesAreSkipped) {
  std::atomic<int> calls{0};
  {
    LatestFileWriter w("unused", [&](const std::string&, const std::string&) { ++calls; });
    w.Post("same");
    for (int i = 0; i < 5000 && w.writes() == 0; ++i) usleep(1000);
    w.Post("same");
    w.Post("same");
  }
  EXPECT_EQ(calls.load(), 1);
}

TEST(LatestFileWriterTest, WritesTheFileAtomically) {
  auto path = std::filesystem::temp_directory_path() / ("lfw-" + std::to_string(getpid()) + ".json");
  {
    LatestFileWriter w(path.string());
    w.Post("{\"x\":1}\n");
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "{\"x\":1}\n");
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".tmp"));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kpx

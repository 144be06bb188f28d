// Utf8ValidPrefix: RFC 3629's ranges, boundary by boundary.
#include "controller/base/utf8.h"

#include <string>

#include "gtest/gtest.h"

namespace kpx {
namespace {

TEST(Utf8Test, AcceptsEveryEncodingLength) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xC2\xA7"));          // U+00A7, smallest 2-byte lead
  EXPECT_TRUE(IsValidUtf8("\xE0\xA0\x80"));      // U+0800, smallest 3-byte
  EXPECT_TRUE(IsValidUtf8("\xED\x9F\xBF"));      // U+D7FF, just below the surrogates
  EXPECT_TRUE(IsValidUtf8("\xEE\x80\x80"));      // U+E000, just above them
  EXPECT_TRUE(IsValidUtf8("\xF0\x90\x80\x80"));  // U+10000
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF, the last code point
}

TEST(Utf8Test, RejectsAndPointsAtTheFirstBadByte) {
  EXPECT_EQ(Utf8ValidPrefix("fl\xA7nodeport"), 2u);   // lone continuation byte
  EXPECT_EQ(Utf8ValidPrefix("ab\xC0\x80"), 2u);       // overlong NUL
  EXPECT_EQ(Utf8ValidPrefix("\xC1\xBF"), 0u);         // overlong
  EXPECT_EQ(Utf8ValidPrefix("x\xE0\x9F\xBF"), 1u);    // overlong 3-byte
  EXPECT_EQ(Utf8ValidPrefix("\xED\xA0\x80"), 0u);     // U+D800, a surrogate
  EXPECT_EQ(Utf8ValidPrefix("\xF0\x8F\xBF\xBF"), 0u); // overlong 4-byte
  EXPECT_EQ(Utf8ValidPrefix("\xF4\x90\x80\x80"), 0u); // past U+10FFFF
  EXPECT_EQ(Utf8ValidPrefix("\xF5\x80\x80\x80"), 0u); // no such lead byte
  EXPECT_EQ(Utf8ValidPrefix("ok\xE2\x82"), 2u);       // truncated at the end
  EXPECT_EQ(Utf8ValidPrefix("ok\xE2\x28\xA1"), 2u);   // bad continuation
  EXPECT_EQ(Utf8ValidPrefix(std::string("a\0b", 3)), 3u);  // NUL is valid UTF-8
}

}  // namespace
}  // namespace kpx

// user_data packing of the io_uring proxy: every field survives a round trip,
// generations wrap at 24 bits, and no valid request packs to 0.
#include "dataplane/uring/user_data.h"

#include "gtest/gtest.h"

namespace kpx::uring {
namespace {

TEST(UserData, RoundTripsEveryOp) {
  for (int op = 1; op < kNumOps; ++op) {
    for (uint32_t index : {0u, 1u, 1023u, 65535u, 0xffffffffu}) {
      for (uint32_t gen : {0u, 1u, 0x7fffffu, 0xffffffu}) {
        UserData ud{static_cast<Op>(op), index, gen};
        uint64_t packed = ud.Pack();
        EXPECT_NE(packed, 0u);
        EXPECT_EQ(UserData::Unpack(packed), ud) << op << " " << index << " " << gen;
      }
    }
  }
}

TEST(UserData, GenerationKeepsLow24Bits) {
  UserData ud{Op::kRecvClient, 7, 0x1234567u};
  UserData back = UserData::Unpack(ud.Pack());
  EXPECT_EQ(back.generation, 0x234567u);
  EXPECT_EQ(back.index, 7u);
  EXPECT_EQ(back.op, Op::kRecvClient);
}

TEST(UserData, FieldsDoNotOverlap) {
  // Distinct (op, index, generation) give distinct values: a completion for
  // one connection's recv can never be read as another's send.
  UserData a{Op::kRecvClient, 5, 9};
  UserData b{Op::kSendClient, 5, 9};
  UserData c{Op::kRecvClient, 6, 9};
  UserData d{Op::kRecvClient, 5, 10};
  EXPECT_NE(a.Pack(), b.Pack());
  EXPECT_NE(a.Pack(), c.Pack());
  EXPECT_NE(a.Pack(), d.Pack());
  static_assert(UserData{Op::kTick, 0, 0}.Pack() == (uint64_t{2} << 56));
}

}  // namespace
}  // namespace kpx::uring

// The 64-bit user_data every io_uring request of the proxy carries: which
// operation completed and on which pooled object (connection or listener slot),
// with a generation so a completion can never be mistaken for a later tenant of
// the same slot.
#pragma once

#include <cstdint>

namespace kpx::uring {

enum class Op : uint8_t {
  kNone = 0,         // never submitted: 0 is not a valid user_data
  kCommand,          // read on the worker's eventfd: control commands queued
  kTick,             // periodic timer: idle sweep, deferred work
  kAccept,           // multishot accept on a listener slot
  kAcceptRetry,      // back-off timer after EMFILE/ENFILE on a listener slot
  kConnect,          // connect to a backend
  kConnectTimeout,   // the timeout linked to kConnect
  kRecvClient,       // recv from the client socket
  kRecvBackend,      // recv from the backend socket
  kSendClient,       // send to the client socket
  kSendBackend,      // send to the backend socket
  kPollClientIn,     // spliced flow 0 waits for the client to be readable
  kPollBackendOut,   // spliced flow 0 waits for the backend to take more
  kPollBackendIn,    // spliced flow 1 waits for the backend to be readable
  kPollClientOut,    // spliced flow 1 waits for the client to take more
  kCancel,           // an async cancel request (its own completion is ignored)
};
// The readiness poll of a spliced flow (0: client -> backend, 1: back):
// `out` waits for the sink to take more, otherwise for the source.
constexpr Op PollOp(int flow, bool out) {
  if (flow == 0) return out ? Op::kPollBackendOut : Op::kPollClientIn;
  return out ? Op::kPollClientOut : Op::kPollBackendIn;
}

inline constexpr int kNumOps = static_cast<int>(Op::kCancel) + 1;

struct UserData {
  Op op = Op::kNone;
  uint32_t index = 0;       // connection or listener slot
  uint32_t generation = 0;  // 24 bits are kept

  static constexpr uint32_t kGenerationMask = (1u << 24) - 1;

  constexpr uint64_t Pack() const {
    return (static_cast<uint64_t>(op) << 56) |
           (static_cast<uint64_t>(generation & kGenerationMask) << 32) | index;
  }
  static constexpr UserData Unpack(uint64_t v) {
    return UserData{static_cast<Op>(v >> 56), static_cast<uint32_t>(v),
                    static_cast<uint32_t>(v >> 32) & kGenerationMask};
  }
  friend constexpr bool operator==(const UserData&, const UserData&) = default;
};

}  // namespace kpx::uring

// UringProber: the real Prober. One io_uring, owned by the checker's thread,
// carries every probe: connect linked to a timeout, then for HTTP a request
// send linked to a response recv linked to the rest of the timeout. Thousands
// of probes are in flight together on one thread, no thread per probe.
//
// TCP: healthy when the handshake completes. HTTP: "GET <path> HTTP/1.1" with
// Host and Connection: close; healthy on a 2xx/3xx status line. Sockets close
// with SO_LINGER 0 (RST): no TIME_WAIT pile-up on the node at tens of
// thousands of probes per second.
#pragma once

#include <linux/time_types.h>
#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dataplane/health/prober.h"
#include "dataplane/uring/uring_ring.h"

namespace kpx::health {

// The status code of a response that starts with data (the bytes read so
// far): the code once the status line shows it, kNeedMore while the bytes
// seen could still be a status line, kGarbage when they cannot.
inline constexpr int kNeedMore = -1;
inline constexpr int kGarbage = -2;
int HttpStatusFromResponse(std::string_view data, bool eof);

class UringProber final : public Prober {
 public:
  // Creates the ring: call on the thread that will call Start and Poll.
  static absl::StatusOr<std::unique_ptr<UringProber>> Create(unsigned ring_entries = 512);
  ~UringProber() override;

  void SetCallback(Callback callback) override { callback_ = std::move(callback); }
  void Start(uint64_t probe_id, const ProbeRequest& request) override;
  void Poll(absl::Duration max_wait) override;
  void Wake() override;
  size_t in_flight() const override { return in_flight_; }

 private:
  enum class Op : uint8_t { kWake = 1, kConnect, kSend, kRecv, kTimeout };
  static constexpr size_t kResponseBytes = 128;  // a status line fits easily

  struct Slot {
    uint32_t index = 0;
    uint32_t gen = 0;
    uint64_t probe_id = 0;
    int fd = -1;
    int inflight = 0;  // requests the kernel still holds (buffers stay put)
    bool decided = false;
    CheckType type = CheckType::kTcp;
    sockaddr_in addr{};
    __kernel_timespec ts{};  // the link timeout's, read at submission
    int64_t start_ns = 0;
    int64_t deadline_ns = 0;
    std::string request;
    char response[kResponseBytes];
    size_t response_len = 0;
  };

  UringProber() = default;
  Slot* Alloc();
  void Free(Slot* s);
  io_uring_sqe* Sqe(unsigned needed);
  void SetTimeout(Slot* s, int64_t now_ns);
  void SubmitConnect(Slot* s, int64_t now_ns);
  void SubmitHttp(Slot* s, int64_t now_ns);
  void SubmitRecv(Slot* s, int64_t now_ns);
  void ArmWake();
  void Handle(uint64_t user_data, int res);
  void Finish(Slot* s, ProbeResult r, int64_t now_ns);
  void MaybeFree(Slot* s);

  Callback callback_;
  std::unique_ptr<uring::UringRing> ring_;
  int wake_fd_ = -1;
  uint64_t wake_buf_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;  // stable addresses: the kernel points into them
  std::vector<uint32_t> free_;
  size_t in_flight_ = 0;  // probes not yet reported
  // Probes that failed before reaching the ring (socket() errors), reported
  // on the next Poll so that Start never calls back.
  std::vector<std::pair<uint64_t, ProbeResult>> early_;
  std::vector<std::pair<uint64_t, int>> cqes_;  // (user_data, res) of one Poll
};

}  // namespace kpx::health

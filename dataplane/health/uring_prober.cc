// UringProber: probes as io_uring request chains on one ring (see header).
#include "dataplane/health/uring_prober.h"

#include <glog/logging.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kpx::health {
namespace {

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// user_data: op (8 bits) | generation (24) | slot (32).
uint64_t Pack(uint8_t op, uint32_t gen, uint32_t slot) {
  return (uint64_t{op} << 56) | (uint64_t{gen & 0xffffff} << 32) | slot;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

int HttpStatusFromResponse(std::string_view d, bool eof) {
  // "HTTP/1.x NNN" then ' ' or CR (a missing reason phrase is legal).
  static constexpr std::string_view kPrefix = "HTTP/1.";
  for (size_t i = 0; i < d.size() && i < 13; ++i) {
    const char c = d[i];
    bool fits;
    if (i < kPrefix.size()) fits = c == kPrefix[i];
    else if (i == 7) fits = IsDigit(c);
    else if (i == 8) fits = c == ' ';
    else if (i < 12) fits = IsDigit(c);
    else fits = c == ' ' || c == '\r' || c == '\n';
    if (!fits) return kGarbage;
  }
  if (d.size() < 12 || (d.size() == 12 && !eof)) return eof ? kGarbage : kNeedMore;
  return (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
}

absl::StatusOr<std::unique_ptr<UringProber>> UringProber::Create(unsigned ring_entries) {
  std::unique_ptr<UringProber> p(new UringProber());
  auto ring = uring::UringRing::Create(ring_entries);
  if (!ring.ok()) return ring.status();
  p->ring_ = std::move(*ring);
  // Blocking on purpose: io_uring would complete a read of a non-blocking
  // eventfd at once with -EAGAIN (a busy loop) instead of waiting for a write.
  p->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (p->wake_fd_ < 0) {
    return absl::InternalError(absl::StrCat("health prober eventfd: ", std::strerror(errno)));
  }
  p->ArmWake();
  return p;
}

UringProber::~UringProber() {
  // Exiting the ring cancels and waits for every request, so the slot
  // buffers can go after it.
  ring_.reset();
  for (auto& s : slots_) {
    if (s->fd >= 0) close(s->fd);
  }
  if (wake_fd_ >= 0) close(wake_fd_);
}

UringProber::Slot* UringProber::Alloc() {
  if (free_.empty()) {
    auto s = std::make_unique<Slot>();
    s->index = static_cast<uint32_t>(slots_.size());
    slots_.push_back(std::move(s));
    return slots_.back().get();
  }
  Slot* s = slots_[free_.back()].get();
  free_.pop_back();
  return s;
}

void UringProber::Free(Slot* s) {
  if (s->fd >= 0) close(s->fd);  // SO_LINGER 0: RST, no TIME_WAIT here
  s->fd = -1;
  ++s->gen;
  s->decided = false;
  s->response_len = 0;
  free_.push_back(s->index);
}

io_uring_sqe* UringProber::Sqe(unsigned needed) {
  // A linked chain must not be split by a full queue: make room first.
  if (io_uring_sq_space_left(ring_->get()) < needed) io_uring_submit(ring_->get());
  io_uring_sqe* sqe = io_uring_get_sqe(ring_->get());
  CHECK(sqe != nullptr) << "health prober: submission queue full after submit";
  return sqe;
}

void UringProber::ArmWake() {
  io_uring_sqe* sqe = Sqe(1);
  io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof(wake_buf_), 0);
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kWake), 0, 0));
}

void UringProber::Wake() {
  const uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));  // blocks only near 2^64 pending wakes
  (void)n;
}

void UringProber::Start(uint64_t probe_id, const ProbeRequest& req) {
  ++in_flight_;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ProbeResult r;
    r.err = errno;
    r.local_error = true;
    early_.emplace_back(probe_id, r);
    return;
  }
  linger lg{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  Slot* s = Alloc();
  s->probe_id = probe_id;
  s->fd = fd;
  s->type = req.type;
  s->addr = sockaddr_in{};
  s->addr.sin_family = AF_INET;
  s->addr.sin_port = htons(req.port);
  s->addr.sin_addr.s_addr = req.ip.be();
  s->start_ns = NowNs();
  s->deadline_ns = s->start_ns + absl::ToInt64Nanoseconds(req.timeout);
  if (req.type == CheckType::kHttp) {
    s->request = absl::StrCat("GET ", req.path, " HTTP/1.1\r\nHost: ", req.ip.ToString(), ":",
                              req.port,
                              "\r\nUser-Agent: kpx-health/1\r\nAccept: */*\r\n"
                              "Connection: close\r\n\r\n");
  }
  SubmitConnect(s, s->start_ns);
}

void UringProber::SetTimeout(Slot* s, int64_t now_ns) {
  const int64_t left = std::max<int64_t>(s->deadline_ns - now_ns, 1000);
  s->ts.tv_sec = left / 1'000'000'000;
  s->ts.tv_nsec = left % 1'000'000'000;
}

void UringProber::SubmitConnect(Slot* s, int64_t now_ns) {
  SetTimeout(s, now_ns);
  io_uring_sqe* sqe = Sqe(2);
  io_uring_prep_connect(sqe, s->fd, reinterpret_cast<const sockaddr*>(&s->addr), sizeof(s->addr));
  sqe->flags |= IOSQE_IO_LINK;
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kConnect), s->gen, s->index));
  sqe = io_uring_get_sqe(ring_->get());
  io_uring_prep_link_timeout(sqe, &s->ts, 0);
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kTimeout), s->gen, s->index));
  s->inflight += 2;
}

void UringProber::SubmitHttp(Slot* s, int64_t now_ns) {
  // send -> recv -> timeout (on the recv): one chain, one submission. The
  // request is tiny and the socket fresh, so the send never waits.
  SetTimeout(s, now_ns);
  io_uring_sqe* sqe = Sqe(3);
  io_uring_prep_send(sqe, s->fd, s->request.data(), s->request.size(), MSG_NOSIGNAL);
  sqe->flags |= IOSQE_IO_LINK;
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kSend), s->gen, s->index));
  sqe = io_uring_get_sqe(ring_->get());
  io_uring_prep_recv(sqe, s->fd, s->response, kResponseBytes, 0);
  sqe->flags |= IOSQE_IO_LINK;
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kRecv), s->gen, s->index));
  sqe = io_uring_get_sqe(ring_->get());
  io_uring_prep_link_timeout(sqe, &s->ts, 0);
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kTimeout), s->gen, s->index));
  s->inflight += 3;
}

void UringProber::SubmitRecv(Slot* s, int64_t now_ns) {
  // The status line arrived in pieces: read on, within the same deadline.
  SetTimeout(s, now_ns);
  io_uring_sqe* sqe = Sqe(2);
  io_uring_prep_recv(sqe, s->fd, s->response + s->response_len, kResponseBytes - s->response_len, 0);
  sqe->flags |= IOSQE_IO_LINK;
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kRecv), s->gen, s->index));
  sqe = io_uring_get_sqe(ring_->get());
  io_uring_prep_link_timeout(sqe, &s->ts, 0);
  io_uring_sqe_set_data64(sqe, Pack(static_cast<uint8_t>(Op::kTimeout), s->gen, s->index));
  s->inflight += 2;
}

void UringProber::Finish(Slot* s, ProbeResult r, int64_t now_ns) {
  s->decided = true;
  r.latency = absl::Nanoseconds(now_ns - s->start_ns);
  --in_flight_;
  callback_(s->probe_id, r);
  MaybeFree(s);
}

void UringProber::MaybeFree(Slot* s) {
  if (s->decided && s->inflight == 0) Free(s);
}

void UringProber::Handle(uint64_t user_data, int res) {
  const auto op = static_cast<Op>(user_data >> 56);
  if (op == Op::kWake) {
    ArmWake();
    return;
  }
  const auto index = static_cast<uint32_t>(user_data);
  const auto gen = static_cast<uint32_t>(user_data >> 32) & 0xffffff;
  if (index >= slots_.size()) return;
  Slot* s = slots_[index].get();
  if ((s->gen & 0xffffff) != gen) return;  // cannot happen: slots wait for all CQEs
  --s->inflight;
  if (op == Op::kTimeout || s->decided) {
    MaybeFree(s);
    return;
  }
  const int64_t now = NowNs();
  // A linked timeout that fired cancels its request: that is our timeout.
  const int err = res == -ECANCELED ? ETIMEDOUT : -res;
  ProbeResult r;
  switch (op) {
    case Op::kConnect:
      if (res < 0) {
        r.err = err;
        r.local_error = IsLocalProbeError(err);
        Finish(s, r, now);
      } else if (s->type == CheckType::kHttp) {
        SubmitHttp(s, now);
      } else {
        r.ok = true;
        Finish(s, r, now);
      }
      return;
    case Op::kSend:
      if (res < 0) {
        r.err = err;
        Finish(s, r, now);  // the linked recv comes back cancelled
      }
      return;
    case Op::kRecv: {
      if (res < 0) {
        r.err = err;
        Finish(s, r, now);
        return;
      }
      s->response_len += static_cast<size_t>(res);
      const bool eof = res == 0 || s->response_len == kResponseBytes;
      const int status = HttpStatusFromResponse(std::string_view(s->response, s->response_len), eof);
      if (status == kNeedMore) {
        SubmitRecv(s, now);
        return;
      }
      if (status == kGarbage) {
        r.err = EPROTO;
      } else {
        r.http_status = status;
        r.ok = status >= 200 && status < 400;
      }
      Finish(s, r, now);
      return;
    }
    default:
      return;
  }
}

void UringProber::Poll(absl::Duration max_wait) {
  io_uring* ring = ring_->get();
  if (!early_.empty()) {
    std::vector<std::pair<uint64_t, ProbeResult>> early;
    early.swap(early_);
    for (auto& [id, r] : early) {
      --in_flight_;
      callback_(id, r);
    }
    max_wait = absl::ZeroDuration();
  }
  // Always enter the kernel: with DEFER_TASKRUN, completions (and fired
  // timeouts) are only posted while we do, and liburing's wait returns
  // without entering when a completion is already there.
  if (max_wait <= absl::ZeroDuration() || io_uring_cq_ready(ring) > 0) {
    io_uring_submit_and_get_events(ring);
  } else {
    __kernel_timespec ts{};
    const int64_t ns = absl::ToInt64Nanoseconds(max_wait);
    ts.tv_sec = ns / 1'000'000'000;
    ts.tv_nsec = ns % 1'000'000'000;
    io_uring_cqe* cqe = nullptr;
    int ret = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, nullptr);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY) {
      LOG_EVERY_N(WARNING, 100) << "health prober: io_uring wait: " << std::strerror(-ret);
    }
  }
  // Handling may queue new requests (next HTTP stage); they go out with the
  // next submit. Bounded: at most one pass over what is there now.
  unsigned head;
  unsigned seen = 0;
  io_uring_cqe* cqe;
  cqes_.clear();
  io_uring_for_each_cqe(ring, head, cqe) {
    cqes_.emplace_back(cqe->user_data, cqe->res);
    ++seen;
  }
  io_uring_cq_advance(ring, seen);
  for (const auto& [user_data, res] : cqes_) Handle(user_data, res);
  if (io_uring_sq_ready(ring) > 0) io_uring_submit(ring);
}

}  // namespace kpx::health

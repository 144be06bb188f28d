// The splice relay of a bulk direction (RelayMode::kSplice): once a direction
// has carried splice_after_bytes through the buffer ring, its bytes go
// socket -> pipe -> socket with splice(2), so pages are handed on by
// reference instead of being copied into user space and back. splice runs on
// the worker thread, non-blocking, driven by io_uring readiness polls
// (io_uring's own IORING_OP_SPLICE would park an io-wq thread per waiting
// socket, see README.md). The pipe bounds what a direction holds, so a slow
// receiver still pushes back on the sender through TCP.
#include <fcntl.h>
#include <glog/logging.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "dataplane/uring/worker.h"

namespace kpx::uring {
namespace {

// splice() attempts per Pump before yielding to the ring (and other
// connections) through a poll that completes at once if still ready.
constexpr int kMaxRoundsPerPump = 8;

// A read at least this large found the sender ahead of us: a bulk flow.
constexpr int BulkReadMin(unsigned buffer_size) { return static_cast<int>(buffer_size / 4); }

bool SetNonBlocking(int fd) {
  const int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0;
}

}  // namespace

void Worker::NoteReceived(Conn* c, int f, int bytes) {
  Flow& flow = c->flow[f];
  // Only reads that found a backlog (a quarter buffer or more) count: a
  // keep-alive connection of small requests and responses carries megabytes
  // over its life, but a pipe would cost it three splice calls and a poll
  // per message instead of one recv and one send (keep-alive: 1.18x ->
  // 1.30x HAProxy, docs/BENCHMARKS.md). 0 bytes: splice from the first byte.
  if (ctx_->options.splice_after_bytes > 0 && bytes < BulkReadMin(bufs_->buffer_size())) return;
  flow.received += static_cast<uint64_t>(bytes);
  if (SpliceEnabled() && !flow.to_splice &&
      flow.received >= static_cast<uint64_t>(ctx_->options.splice_after_bytes)) {
    flow.to_splice = true;  // no more recvs; StartSplice once the queue is sent
  }
}

void Worker::StartSplice(Conn* c, int f) {
  Flow& flow = c->flow[f];
  const int src = f == 0 ? c->client_fd : c->backend_fd;
  const int dst = f == 0 ? c->backend_fd : c->client_fd;
  int p[2] = {-1, -1};
  // O_NONBLOCK on both sockets: SPLICE_F_NONBLOCK only covers the pipe side,
  // a blocking socket would still block the worker in splice(). io_uring's
  // recv/send on the other direction are unaffected (they wait by polling).
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0 || !SetNonBlocking(src) || !SetNonBlocking(dst)) {
    LOG_EVERY_N(WARNING, 100) << "worker " << index_
                              << ": splice relay unavailable, copying: " << std::strerror(errno);
    if (p[0] >= 0) close(p[0]);
    if (p[1] >= 0) close(p[1]);
    flow.to_splice = false;  // keep copying; tried again after splice_after_bytes more
    flow.received = 0;
    ArmRecv(c, f);
    MaybeForwardFin(c, f);
    return;
  }
  flow.pipe_rd = p[0];
  flow.pipe_wr = p[1];
  // A larger pipe holds more skb fragments per splice (one slot each);
  // failure (pipe-max-size, per-user limits) leaves the default 64 KiB.
  if (ctx_->options.pipe_size > 0) fcntl(flow.pipe_wr, F_SETPIPE_SZ, ctx_->options.pipe_size);
  flow.spliced = true;
  ctx_->spliced_flows.fetch_add(1, std::memory_order_relaxed);
  Pump(c, f);
}

void Worker::Pump(Conn* c, int f) {
  Flow& flow = c->flow[f];
  if (c->state != State::kRelaying || flow.done) return;
  const int src = f == 0 ? c->client_fd : c->backend_fd;
  const int dst = f == 0 ? c->backend_fd : c->client_fd;
  const size_t want = static_cast<size_t>(std::max(ctx_->options.pipe_size, 64 * 1024));
  bool progress = true;
  bool moved = false;
  for (int round = 0; round < kMaxRoundsPerPump && progress; ++round) {
    progress = false;
    if (!flow.eof) {
      // EAGAIN here means "socket empty" or "pipe slots full"; the latter is
      // only possible with bytes in the pipe, and then we wait on the sink.
      ssize_t n = splice(src, nullptr, flow.pipe_wr, nullptr, want,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        flow.pipe_bytes += static_cast<uint32_t>(n);
        progress = moved = true;
      } else if (n == 0) {
        flow.eof = true;
      } else if (errno != EAGAIN && errno != EINTR) {
        Abort(c, /*reset=*/true);  // ECONNRESET, ETIMEDOUT: the source is gone
        return;
      }
    }
    if (flow.pipe_bytes > 0) {
      ssize_t n = splice(flow.pipe_rd, nullptr, dst, nullptr, flow.pipe_bytes,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        flow.pipe_bytes -= static_cast<uint32_t>(n);
        (f == 0 ? c->backend->bytes_to_backend : c->backend->bytes_to_client)
            .fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
        progress = moved = true;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        Abort(c, /*reset=*/true);  // EPIPE, ECONNRESET: the receiver is gone
        return;
      }
    }
  }
  if (moved) c->last_active_ns = now_ns_;
  if (flow.eof && flow.pipe_bytes == 0) {
    MaybeForwardFin(c, f);
    return;
  }
  // Wait on the sink while the pipe holds bytes (it may be what stopped the
  // source, too), on the source when the pipe is empty.
  const bool out = flow.pipe_bytes > 0;
  io_uring_sqe* sqe = Sqe();
  io_uring_prep_poll_add(sqe, out ? dst : src, out ? POLLOUT : POLLIN);
  Submit(sqe, PollOp(f, out), c->index, c->gen);
  ++c->inflight;
  flow.poll_armed = true;
  flow.poll_out = out;
}

void Worker::OnPoll(Conn* c, int f, int res) {
  Flow& flow = c->flow[f];
  --c->inflight;
  flow.poll_armed = false;
  if (c->state != State::kRelaying) {
    MaybeFree(c);
    return;
  }
  // POLLERR/POLLHUP included: the next splice() reports the error itself.
  (void)res;
  Pump(c, f);
}

void Worker::ClosePipes(Conn* c) {
  for (Flow& flow : c->flow) {
    if (flow.pipe_rd >= 0) close(flow.pipe_rd);
    if (flow.pipe_wr >= 0) close(flow.pipe_wr);
    flow.pipe_rd = flow.pipe_wr = -1;
    flow.pipe_bytes = 0;
  }
}

}  // namespace kpx::uring

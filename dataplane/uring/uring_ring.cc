// io_uring setup with flag fallback, and provided-buffer ring registration
// (liburing 2.3: io_uring_register_buf_ring over memory we map ourselves).
#include "dataplane/uring/uring_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kpx::uring {

absl::StatusOr<std::unique_ptr<UringRing>> UringRing::Create(unsigned entries) {
  std::unique_ptr<UringRing> r(new UringRing());
  const unsigned attempts[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
      0,
  };
  int err = 0;
  for (unsigned flags : attempts) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 4;  // completions outnumber submissions in bursts
    err = io_uring_queue_init_params(entries, &r->ring_, &params);
    if (err == 0) {
      r->setup_flags_ = flags;
      return r;
    }
    if (err != -EINVAL) break;  // only "flag unknown" is worth a weaker retry
  }
  return absl::UnavailableError(absl::StrCat(
      "io_uring_queue_init(", entries, " entries): ", std::strerror(-err),
      err == -EPERM ? " (io_uring disabled by sysctl kernel.io_uring_disabled?)" : "",
      err == -ENOMEM ? " (raise RLIMIT_MEMLOCK?)" : ""));
}

UringRing::~UringRing() { io_uring_queue_exit(&ring_); }

absl::StatusOr<std::unique_ptr<BufferRing>> BufferRing::Create(io_uring* ring, uint16_t group,
                                                               unsigned count, unsigned size) {
  if (count == 0 || (count & (count - 1)) != 0 || count > 32768) {
    return absl::InvalidArgumentError(
        absl::StrCat("buffer count ", count, " must be a power of two <= 32768"));
  }
  std::unique_ptr<BufferRing> b(new BufferRing());
  b->group_ = group;
  b->count_ = count;
  b->size_ = size;
  b->br_bytes_ = sizeof(io_uring_buf) * count;
  void* br = mmap(nullptr, b->br_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (br == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("mmap buffer ring: ", std::strerror(errno)));
  }
  b->br_ = static_cast<io_uring_buf_ring*>(br);
  b->base_bytes_ = static_cast<size_t>(count) * size;
  void* base = mmap(nullptr, b->base_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
                    -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat("mmap ", b->base_bytes_,
                                                     " bytes of receive buffers: ",
                                                     std::strerror(errno)));
  }
  b->base_ = static_cast<char*>(base);

  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(b->br_);
  reg.ring_entries = count;
  reg.bgid = group;
  int err = io_uring_register_buf_ring(ring, &reg, 0);
  if (err != 0) {
    return absl::UnavailableError(absl::StrCat(
        "io_uring_register_buf_ring: ", std::strerror(-err), " (needs Linux >= 5.19)"));
  }
  b->ring_ = ring;
  io_uring_buf_ring_init(b->br_);
  const int mask = io_uring_buf_ring_mask(count);
  for (unsigned i = 0; i < count; ++i) {
    io_uring_buf_ring_add(b->br_, b->Buffer(i), size, i, mask, i);
  }
  io_uring_buf_ring_advance(b->br_, count);
  b->available_ = count;
  return b;
}

void BufferRing::Return(uint16_t bid) {
  io_uring_buf_ring_add(br_, Buffer(bid), size_, bid, io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(br_, 1);
  ++available_;
}

BufferRing::~BufferRing() {
  if (ring_ != nullptr && br_ != nullptr) io_uring_unregister_buf_ring(ring_, group_);
  if (base_ != nullptr) munmap(base_, base_bytes_);
  if (br_ != nullptr) munmap(br_, br_bytes_);
}

}  // namespace kpx::uring

// RAII owners of one worker's io_uring and of its provided-buffer ring (the
// receive buffers the kernel picks from, so idle connections hold no memory).
// Both are created on the worker thread: with IORING_SETUP_SINGLE_ISSUER only
// that thread may submit.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace kpx::uring {

class UringRing {
 public:
  // Tries SINGLE_ISSUER|DEFER_TASKRUN (completions run only when this thread
  // asks for them: no IPIs, batched task work), then SINGLE_ISSUER|COOP_TASKRUN,
  // then no flags, so older kernels still work.
  static absl::StatusOr<std::unique_ptr<UringRing>> Create(unsigned entries);
  ~UringRing();
  UringRing(const UringRing&) = delete;
  UringRing& operator=(const UringRing&) = delete;

  io_uring* get() { return &ring_; }
  unsigned setup_flags() const { return setup_flags_; }

 private:
  UringRing() = default;
  io_uring ring_{};
  unsigned setup_flags_ = 0;
};

class BufferRing {
 public:
  // Registers `count` (a power of two) buffers of `size` bytes as group `group`.
  static absl::StatusOr<std::unique_ptr<BufferRing>> Create(io_uring* ring, uint16_t group,
                                                            unsigned count, unsigned size);
  // Unregisters (if the ring is still there) and frees the memory. The ring
  // must not have requests in flight that could still select a buffer.
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  uint16_t group() const { return group_; }
  unsigned buffer_size() const { return size_; }
  unsigned available() const { return available_; }
  char* Buffer(uint16_t bid) { return base_ + static_cast<size_t>(bid) * size_; }
  // The kernel handed buffer `bid` to a completion.
  void Consumed() { --available_; }
  // Gives `bid` back to the kernel.
  void Return(uint16_t bid);
  // The ring is about to go away: do not unregister in the destructor.
  void DetachFromRing() { ring_ = nullptr; }

 private:
  BufferRing() = default;
  io_uring* ring_ = nullptr;
  io_uring_buf_ring* br_ = nullptr;
  size_t br_bytes_ = 0;
  char* base_ = nullptr;
  size_t base_bytes_ = 0;
  uint16_t group_ = 0;
  unsigned count_ = 0;
  unsigned size_ = 0;
  unsigned available_ = 0;
};

}  // namespace kpx::uring

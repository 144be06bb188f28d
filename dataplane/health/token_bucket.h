// A token bucket on caller-supplied time: the checker's global cap on probes
// per second (a whole-node outage must not turn into a SYN flood).
#pragma once

#include <algorithm>

#include "absl/time/time.h"

namespace kpx::health {

class TokenBucket {
 public:
  // `rate` tokens per second, at most `burst` saved up (>= 1). rate <= 0 means
  // unlimited.
  TokenBucket(double rate, double burst) : rate_(rate), burst_(std::max(burst, 1.0)), tokens_(burst_) {}

  bool unlimited() const { return rate_ <= 0; }

  bool TryTake(absl::Time now) {
    if (unlimited()) return true;
    Refill(now);
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

  // When the next token will be there (now if one is).
  absl::Time NextToken(absl::Time now) {
    if (unlimited()) return now;
    Refill(now);
    if (tokens_ >= 1.0) return now;
    // At least 1 us ahead, so a caller that waits for it always finds a token.
    return now + std::max(absl::Microseconds(1), absl::Seconds((1.0 - tokens_) / rate_));
  }

 private:
  void Refill(absl::Time now) {
    if (last_ == absl::InfinitePast() || now < last_) {
      last_ = now;
      return;
    }
    tokens_ = std::min(burst_, tokens_ + absl::ToDoubleSeconds(now - last_) * rate_);
    last_ = now;
  }

  double rate_;
  double burst_;
  double tokens_;
  absl::Time last_ = absl::InfinitePast();
};

}  // namespace kpx::health

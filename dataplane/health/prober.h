// The Prober seam: starts TCP-connect or HTTP-GET probes and reports each
// outcome once. UringProber (uring_prober.h) is the real one; FakeProber
// (fake_prober.h) answers from a script under a fake clock in tests.
//
// Threading: one thread owns a Prober (Start, Poll and the callback all run on
// it); only Wake() may be called from other threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/time/time.h"
#include "controller/base/ipv4.h"
#include "dataplane/health/health_spec.h"

namespace kpx::health {

struct ProbeRequest {
  Ipv4 ip;
  uint16_t port = 0;
  CheckType type = CheckType::kTcp;  // kTcp or kHttp
  std::string path = "/";            // kHttp: request target
  absl::Duration timeout = absl::Milliseconds(200);  // whole probe: connect (+ request + status line)
};

struct ProbeResult {
  bool ok = false;
  // The probe could not be run for a reason on our side (out of descriptors,
  // ephemeral ports, memory): says nothing about the backend, so it must not
  // count toward fall.
  bool local_error = false;
  int err = 0;          // positive errno on failure (ETIMEDOUT for the timeout, EPROTO for a bad reply)
  int http_status = 0;  // HTTP: the status code received, 0 if none
  absl::Duration latency;
};

class Prober {
 public:
  using Callback = std::function<void(uint64_t probe_id, const ProbeResult& result)>;
  virtual ~Prober() = default;

  // Where results go. Set once, before the first Start.
  virtual void SetCallback(Callback callback) = 0;
  // Starts a probe. Its result is always delivered later, from Poll (never
  // from inside Start), exactly once.
  virtual void Start(uint64_t probe_id, const ProbeRequest& request) = 0;
  // Runs the I/O: waits up to `max_wait` (zero: does not block) for
  // completions or a Wake(), and calls the callback for each finished probe.
  virtual void Poll(absl::Duration max_wait) = 0;
  // Thread-safe: makes a blocked or the next Poll return promptly.
  virtual void Wake() = 0;
  virtual size_t in_flight() const = 0;
};

// Errors that are about this node rather than the backend (see local_error).
bool IsLocalProbeError(int err);

}  // namespace kpx::health

// What to check on a backend and how often (HealthSpec), its defaults (kpxd
// flags), the per-Service kpx.io/health-* annotation overrides, and the pure
// step from a ServiceTable to the list of backends the checker probes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/reconciler.h"
#include "controller/service_table.h"

namespace kpx::health {

enum class CheckType : uint8_t { kNone, kTcp, kHttp };
const char* CheckTypeName(CheckType t);  // "none", "tcp", "http"

// Defaults: a dead pod is out of rotation within 1 s from active probes alone.
//
//   interval 300 ms +-20 % jitter: probes of many backends spread over time;
//            10k backends cost ~33k probes/s on one core (tests/bench).
//   timeout  200 ms: a handshake to a pod on a healthy cluster network takes
//            well under 1 ms; 200 ms is large headroom yet keeps a probe to a
//            black-holed pod short.
//   fall 2:  one lost SYN (the kernel resends only after 1 s) is not enough to
//            remove a pod; two failures in a row are.
//   rise 2:  a restarted pod must answer twice before traffic returns, so a
//            server that accepts once and crashes does not flap in and out.
//   suspect_interval 100 ms: after a failure the next probe comes fast, so
//            fall is reached in one short step instead of another interval.
//
// Worst case from death to Down (death just after a successful probe, every
// probe running into its timeout; probes of one backend never overlap):
//   (1 + jitter) x interval + (fall - 1) x max(suspect_interval, timeout) + timeout
//   = 360 + 200 + 200 = 760 ms     (a process crash is refused at once: 460 ms)
// which stays within the bound fall x interval + timeout = 800 ms as
// long as jitter x interval + (fall - 1) x max(suspect_interval, timeout) <=
// (fall - 1) x interval. A passive failure seen by the io_uring proxy probes
// at once (at most suspect_interval after the last probe), so on that path a
// crash is out within ~suspect_interval.
struct HealthSpec {
  CheckType type = CheckType::kTcp;
  std::string path = "/";  // HTTP only; 2xx/3xx is healthy
  uint16_t port = 0;       // 0 = probe the backend's own port
  absl::Duration interval = absl::Milliseconds(300);
  absl::Duration timeout = absl::Milliseconds(200);
  int rise = 2;
  int fall = 2;
  // Not settable per Service (no annotation): node-wide tuning.
  absl::Duration suspect_interval = absl::Milliseconds(100);  // Suspect, and rising from Down
  // Down: probes back off (a dead pod costs little) but stay frequent enough
  // that a restarted pod is back within ~0.5-5 s (HAProxy's downinter = inter).
  absl::Duration down_backoff = absl::Milliseconds(500);       // first probe gap once Down
  absl::Duration down_backoff_max = absl::Seconds(5);          // doubling stops here
  double jitter = 0.2;  // +- fraction applied to healthy and down gaps

  // The port a probe connects to for a backend on `backend_port`.
  uint16_t ProbePort(uint16_t backend_port) const { return port != 0 ? port : backend_port; }
  std::string String() const;  // "tcp interval=300ms timeout=200ms rise=2 fall=2"
  friend bool operator==(const HealthSpec&, const HealthSpec&) = default;
};

// "Stricter" = probes more often: the spec a backend shared by several
// Services gets. A total order (ties broken on every field) so the choice is
// deterministic whatever the order Services are seen in; kNone is the least
// strict of all.
bool StricterThan(const HealthSpec& a, const HealthSpec& b);

// kpxd's health flag values, typed as gflags holds them, so main.cc can
// declare DEFINE_string(health_interval, HealthFlags{}.interval, ...) and hand
// the values back here. The struct's initialisers are the documented defaults.
struct HealthFlags {
  std::string check = "tcp";  // tcp|http|none
  std::string path = "/";
  std::string interval = "300ms";
  std::string timeout = "200ms";
  int32_t rise = 2;
  int32_t fall = 2;
  std::string suspect_interval = "100ms";
  std::string down_backoff = "500ms";
  std::string down_backoff_max = "5s";
  double jitter = 0.2;
};
// The node-wide default spec; an error names the flag and the value.
absl::StatusOr<HealthSpec> HealthSpecFromFlags(const HealthFlags& flags);

// Annotation keys (the Service's metadata.annotations).
inline constexpr char kAnnotationCheck[] = "kpx.io/health-check";
inline constexpr char kAnnotationPath[] = "kpx.io/health-path";
inline constexpr char kAnnotationInterval[] = "kpx.io/health-interval";
inline constexpr char kAnnotationTimeout[] = "kpx.io/health-timeout";
inline constexpr char kAnnotationRise[] = "kpx.io/health-rise";
inline constexpr char kAnnotationFall[] = "kpx.io/health-fall";
inline constexpr char kAnnotationPort[] = "kpx.io/health-port";

// Accepted ranges (also what error messages quote).
inline constexpr absl::Duration kMinInterval = absl::Milliseconds(10);
inline constexpr absl::Duration kMaxInterval = absl::Hours(1);
inline constexpr absl::Duration kMinTimeout = absl::Milliseconds(1);
inline constexpr absl::Duration kMaxTimeout = absl::Minutes(1);
inline constexpr int kMaxRiseFall = 100;
inline constexpr size_t kMaxPathLength = 1024;

struct ParsedHealthSpec {
  HealthSpec spec;
  std::vector<std::string> errors;  // one per bad annotation; its field kept the default
};

// Applies the Service's kpx.io/health-* annotations over `defaults`. A bad
// value is reported ("Service default/web: annotation kpx.io/health-interval=
// \"fast\": ...; using the default 300ms") and only that field keeps its
// default; the Service and its other overrides are kept. Unknown
// kpx.io/health-* keys are reported too (a typo would otherwise be silent).
ParsedHealthSpec ParseHealthAnnotations(const absl::btree_map<std::string, std::string>& annotations,
                                        const HealthSpec& defaults, std::string_view service);

// One backend the checker probes. `backend` is the address the health overlay
// names (Reconciler::SetBackendHealth); the probe goes to
// backend.ip:spec.ProbePort(backend.port).
struct HealthTarget {
  controller::BackendAddr backend;
  HealthSpec spec;
  std::string service;  // "ns/name" of the Service whose spec won (logs, stats)
  friend bool operator==(const HealthTarget&, const HealthTarget&) = default;
};

struct HealthTargets {
  std::vector<HealthTarget> targets;  // sorted by (ip, port), one per backend
  std::vector<std::string> errors;    // annotation errors, once per Service
  friend bool operator==(const HealthTargets&, const HealthTargets&) = default;
};

// One target per distinct ready backend (ip, port) of the table. Only
// ready=true backends are probed: EndpointSlice readiness is authoritative, a
// not-ready (or serving-but-terminating fallback) endpoint is never probed and
// never turned healthy by a probe. Services with kpx.io/health-check=none
// contribute nothing; rules of a non-TCP protocol only with an explicit
// kpx.io/health-port (a TCP probe of a UDP port would always fail). A backend
// shared by Services with different specs gets the strictest (StricterThan).
HealthTargets BuildTargets(const controller::ServiceTable& table, const HealthSpec& defaults);

// Parses "500ms", "1.5s", "2m" (Go/absl duration syntax; a bare number is an
// error because its unit would be a guess).
absl::StatusOr<absl::Duration> ParseHealthDuration(std::string_view text);

}  // namespace kpx::health

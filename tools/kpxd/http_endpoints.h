// HttpEndpoints: kpxd's TCP listeners for monitoring, kube-proxy style:
// --metrics-bind-address (/metrics, Prometheus text) and
// --healthz-bind-address (/healthz, /livez). Both may name the same address;
// then one listener serves all three paths. Port 0 binds a free port
// (tests); bound() tells which.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace kpx::kpxd {

class Daemon;

class HttpEndpoints {
 public:
  // "" disables that endpoint. Addresses are HOST:PORT (IPv4 or a name).
  // A listener that fails to bind is logged and left out (bound() is "").
  static std::unique_ptr<HttpEndpoints> Start(const std::string& metrics_address,
                                              const std::string& healthz_address, Daemon* daemon);
  ~HttpEndpoints();

  // HOST:PORT actually bound ("" if disabled).
  const std::string& metrics_bound() const { return metrics_bound_; }
  const std::string& healthz_bound() const { return healthz_bound_; }

 private:
  explicit HttpEndpoints(Daemon* daemon);
  absl::StatusOr<std::string> Listen(const std::string& flag, const std::string& address,
                                     bool metrics, bool healthz);

  Daemon* daemon_;
  std::vector<std::unique_ptr<httplib::Server>> servers_;
  std::vector<std::thread> threads_;
  std::string metrics_bound_, healthz_bound_;
};

// "HOST:PORT" -> (host, port); error names the flag.
absl::StatusOr<std::pair<std::string, int>> ParseBindAddress(const std::string& flag,
                                                             const std::string& address);

}  // namespace kpx::kpxd

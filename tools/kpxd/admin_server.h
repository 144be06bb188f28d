// AdminServer: kpxd's admin API, HTTP + JSON on a unix socket (default
// /run/kpx/kpxd.sock, mode 0600: root only). Handlers run on cpp-httplib's
// threads and read or change daemon state only through the reconcile loop
// (LoopQueue::RunSync), so they never race the reconciler.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace httplib {
class Server;
}

namespace kpx::kpxd {

class Daemon;

// Registers the admin API's routes on `server`. AdminServer uses it on its
// socket; the admin fuzzer (tests/fuzz/admin_fuzz.cc) on an in-memory stream.
// Handlers reach `daemon` through its reconcile loop (LoopQueue::RunSync).
void InstallAdminRoutes(httplib::Server& server, Daemon* daemon);

class AdminServer {
 public:
  // Binds `socket_path` (removing a stale socket) and serves in a thread.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(const std::string& socket_path,
                                                            Daemon* daemon);
  ~AdminServer();  // stops serving and removes the socket

 private:
  explicit AdminServer(std::string path);

  std::string path_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace kpx::kpxd

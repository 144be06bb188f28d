// Admin API routes. Every response is JSON; errors are {"error": "..."} with a
// 4xx/5xx status and change nothing.
#include "tools/kpxd/admin_server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "tools/kpxd/daemon.h"

namespace kpx::kpxd {
namespace {

constexpr absl::Duration kLoopTimeout = absl::Seconds(5);

void Reply(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  // Messages can quote bytes from manifests (parse errors): invalid UTF-8
  // is replaced, never thrown (an exception here would kill kpxd).
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

void Error(httplib::Response& res, int status, const std::string& message) {
  Reply(res, status, {{"error", message}});
}

}  // namespace

AdminServer::AdminServer(std::string path)
    : path_(std::move(path)), server_(std::make_unique<httplib::Server>()) {}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const std::string& socket_path,
                                                                Daemon* daemon) {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::path(socket_path).parent_path();
  if (!dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("--admin-socket ", socket_path, ": ", ec.message()));
  }
  std::filesystem::remove(socket_path, ec);  // stale socket of a previous kpxd
  std::unique_ptr<AdminServer> s(new AdminServer(socket_path));
  InstallAdminRoutes(*s->server_, daemon);
  s->server_->set_address_family(AF_UNIX);
  // Bind with a restrictive umask so the socket is never briefly world-usable.
  mode_t old = umask(0177);
  bool bound = s->server_->bind_to_port(socket_path.c_str(), 80);
  umask(old);
  if (!bound) {
    return absl::UnavailableError(absl::StrCat("--admin-socket ", socket_path, ": cannot bind"));
  }
  chmod(socket_path.c_str(), 0600);
  s->thread_ = std::thread([srv = s->server_.get()] { srv->listen_after_bind(); });
  LOG(INFO) << "admin API on unix:" << socket_path;
  return s;
}

AdminServer::~AdminServer() {
  server_->stop();
  if (thread_.joinable()) thread_.join();
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

void InstallAdminRoutes(httplib::Server& server, Daemon* daemon) {
  // Runs `fn` on the reconcile loop and replies with its JSON, or 503 when the
  // loop does not answer in time.
  auto on_loop = [daemon](httplib::Response& res,
                          std::function<std::pair<int, nlohmann::json>()> fn) {
    auto result = std::make_shared<std::pair<int, nlohmann::json>>();
    if (!daemon->loop().RunSync([result, fn] { *result = fn(); }, kLoopTimeout)) {
      return Error(res, 503, "kpxd's reconcile loop did not answer within 5s");
    }
    Reply(res, result->first, result->second);
  };

  server.Get("/v1/version", [daemon, on_loop](const httplib::Request&, httplib::Response& res) {
    on_loop(res, [daemon] { return std::pair{200, daemon->VersionJson()}; });
  });
  server.Get("/v1/services", [daemon, on_loop](const httplib::Request& req, httplib::Response& res) {
    std::string name = req.has_param("name") ? req.get_param_value("name") : "";
    on_loop(res, [daemon, name] { return daemon->ServicesJson(name); });
  });
  server.Get("/v1/health", [daemon, on_loop](const httplib::Request& req, httplib::Response& res) {
    std::string name = req.has_param("name") ? req.get_param_value("name") : "";
    on_loop(res, [daemon, name] { return daemon->HealthJson(name); });
  });
  server.Get("/v1/trace", [daemon, on_loop](const httplib::Request& req, httplib::Response& res) {
    std::string src = req.has_param("src") ? req.get_param_value("src") : "";
    std::string dst = req.has_param("dst") ? req.get_param_value("dst") : "";
    on_loop(res, [daemon, src, dst] { return daemon->TraceJson(src, dst); });
  });
  server.Get("/v1/stats", [daemon, on_loop](const httplib::Request&, httplib::Response& res) {
    on_loop(res, [daemon] { return std::pair{200, daemon->StatsJson()}; });
  });
  // Mutations: JSON body in, the affected rules (or an error) out.
  auto post = [&server, daemon, on_loop](const char* path,
                                         std::pair<int, nlohmann::json> (Daemon::*handler)(
                                             const nlohmann::json&)) {
    server.Post(path, [daemon, on_loop, handler](const httplib::Request& req,
                                                 httplib::Response& res) {
      nlohmann::json body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
      if (body.is_discarded() || !body.is_object()) {
        return Error(res, 400, "request body must be a JSON object");
      }
      on_loop(res, [daemon, handler, body] { return (daemon->*handler)(body); });
    });
  };
  post("/v1/endpoints", &Daemon::HandleEndpoints);
  post("/v1/drain", &Daemon::HandleDrain);
  post("/v1/apply", &Daemon::HandleApply);
  post("/v1/delete", &Daemon::HandleDelete);
  server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty()) {
      Error(res, res.status, absl::StrCat("no such admin endpoint: ", req.method, " ", req.path));
    }
  });
  server.set_payload_max_length(8 << 20);
}

}  // namespace kpx::kpxd

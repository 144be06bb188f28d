// kpxd's monitoring listeners: /metrics is built on the reconcile loop (one
// consistent view of the table and counters); /healthz and /livez read
// SyncHealth directly so they answer even while a long sync runs.
#include "tools/kpxd/http_endpoints.h"

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "tools/kpxd/daemon.h"

namespace kpx::kpxd {
namespace {

constexpr absl::Duration kScrapeTimeout = absl::Seconds(5);

std::string Rfc3339(absl::Time t) {
  if (t == absl::InfinitePast()) return "";
  return absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<std::pair<std::string, int>> ParseBindAddress(const std::string& flag,
                                                             const std::string& address) {
  size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", address, ": must be HOST:PORT (port 0..65535), e.g. 127.0.0.1:10249"));
  }
  return std::pair{address.substr(0, colon), port};
}

std::unique_ptr<HttpEndpoints> HttpEndpoints::Start(const std::string& metrics_address,
                                                    const std::string& healthz_address,
                                                    Daemon* daemon) {
  std::unique_ptr<HttpEndpoints> e(new HttpEndpoints(daemon));
  bool same = !metrics_address.empty() && metrics_address == healthz_address &&
              !absl::EndsWith(metrics_address, ":0");
  // As kube-proxy: a listener that cannot bind is logged, and the proxy runs
  // on without it (the DaemonSet's probes then say so).
  if (!metrics_address.empty()) {
    auto bound = e->Listen("metrics-bind-address", metrics_address, true, same);
    if (bound.ok()) {
      e->metrics_bound_ = *bound;
      if (same) e->healthz_bound_ = *bound;
    } else {
      LOG(ERROR) << bound.status().message();
    }
  }
  if (!healthz_address.empty() && !same) {
    auto bound = e->Listen("healthz-bind-address", healthz_address, false, true);
    if (bound.ok()) {
      e->healthz_bound_ = *bound;
    } else {
      LOG(ERROR) << bound.status().message();
    }
  }
  return e;
}

absl::StatusOr<std::string> HttpEndpoints::Listen(const std::string& flag,
                                                  const std::string& address, bool metrics,
                                                  bool healthz) {
  auto hp = ParseBindAddress(flag, address);
  if (!hp.ok()) return hp.status();
  auto server = std::make_unique<httplib::Server>();
  Daemon* d = daemon_;
  if (metrics) {
    server->Get("/metrics", [d](const httplib::Request&, httplib::Response& res) {
      auto text = std::make_shared<std::string>();
      if (!d->loop().RunSync([d, text] { *text = d->MetricsText(); }, kScrapeTimeout)) {
        res.status = 503;
        res.set_content("kpxd's reconcile loop did not answer within 5s\n", "text/plain");
        return;
      }
      res.set_content(*text, "text/plain; version=0.0.4; charset=utf-8");
    });
  }
  if (healthz) {
    // kube-proxy's body: lastUpdated / currentTime; kpx adds why.
    auto handler = [d](bool livez) {
      return [d, livez](const httplib::Request&, httplib::Response& res) {
        SyncHealth::Verdict v = d->sync_health().Check(absl::Now());
        nlohmann::json body = {{"lastUpdated", Rfc3339(v.last_updated)},
                               {"currentTime", Rfc3339(v.now)},
                               {"healthy", v.healthy}};
        if (v.oldest_pending != absl::InfiniteFuture()) {
          body["oldestPendingChange"] = Rfc3339(v.oldest_pending);
        }
        if (!livez) body["nodeEligible"] = true;
        res.status = v.healthy ? 200 : 503;
        d->CountHealthz(livez, res.status);
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_content(body.dump() + "\n", "application/json");
      };
    };
    server->Get("/healthz", handler(false));
    server->Get("/livez", handler(true));
  }
  int port = hp->second;
  if (port == 0) {
    port = server->bind_to_any_port(hp->first.c_str());
    if (port <= 0) {
      return absl::UnavailableError(absl::StrCat("--", flag, "=", address, ": cannot bind"));
    }
  } else if (!server->bind_to_port(hp->first.c_str(), port)) {
    return absl::UnavailableError(
        absl::StrCat("--", flag, "=", address, ": cannot bind (in use? \"\" disables it)"));
  }
  std::string bound = absl::StrCat(hp->first, ":", port);
  httplib::Server* raw = server.get();
  servers_.push_back(std::move(server));
  threads_.emplace_back([raw] { raw->listen_after_bind(); });
  LOG(INFO) << (metrics ? (healthz ? "metrics and healthz" : "metrics") : "healthz")
            << " on http://" << bound;
  return bound;
}

HttpEndpoints::HttpEndpoints(Daemon* daemon) : daemon_(daemon) {}

HttpEndpoints::~HttpEndpoints() {
  for (auto& s : servers_) s->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace kpx::kpxd

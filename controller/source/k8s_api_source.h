// K8sApiSource: lists then watches Services and EndpointSlices on the
// Kubernetes API server, as kube-proxy's informers do, and hands every object
// change to the reconcile loop as a SourceUpdate. Each object is its own
// source key ("api/Service/ns/name", "api/EndpointSlice/ns/name"), so one watch
// event costs one ObjectStore Replace/Remove, and a relist after 410 Gone
// emits only the objects that really differ from what was handed out before.
//
// Combined with a manifest directory (ObjectStore: the most recently replaced
// source wins), an object defined in both follows the latest change: the API
// version wins whenever the API object changes (and on start-up, if the
// directory is loaded first), the file version wins whenever the file is
// written. Relists and unchanged objects never re-take precedence. Keep
// cluster objects in the API and use the directory for objects the API lacks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/objects.h"
#include "controller/source/kubeconfig.h"
#include "controller/source/manifest_dir_source.h"

namespace kpx::controller {

// kube-proxy's selector (cmd/kube-proxy/app/server.go), applied to both
// resources: objects meant for another proxy, and headless Services' slices,
// never reach us.
inline constexpr char kKubeProxyLabelSelector[] =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

struct K8sApiOptions {
  ClusterAccess access;                  // see kubeconfig.h
  std::string label_selector = kKubeProxyLabelSelector;
  int page_size = 500;                   // list `limit`; 0 = unpaginated
  // Server-side watch timeout, jittered in [min, 2*min) like client-go's
  // reflector so a fleet of nodes does not reconnect in step.
  absl::Duration min_watch_timeout = absl::Minutes(5);
  absl::Duration connect_timeout = absl::Seconds(10);
  absl::Duration list_timeout = absl::Seconds(60);  // per list page
  // A stream (list page or watch) that delivers no byte for this long is
  // treated as dead and resumed. The API server's watch cache sends a
  // bookmark every minute to watches that allow them, so 150 s of silence is
  // more than two missed bookmarks: the connection is gone, not quiet.
  absl::Duration stall_timeout = absl::Seconds(150);
  absl::Duration initial_backoff = absl::Milliseconds(200);  // doubles per failure ...
  absl::Duration max_backoff = absl::Seconds(30);            // ... up to this
  bool proxy_from_env = true;            // honour https_proxy / no_proxy, as client-go does
  std::string user_agent = "kpxd/0.1";
};

struct K8sApiResourceStats {
  std::string resource_version;  // last one seen (list, event or bookmark)
  bool synced = false;           // first complete list done
  uint64_t objects = 0;          // objects currently handed out
  uint64_t list_pages = 0;
  uint64_t relists = 0;          // lists after the first (410 Gone)
  uint64_t watches = 0;          // watch requests made
  uint64_t events = 0;           // ADDED/MODIFIED/DELETED events received
  uint64_t bookmarks = 0;
  uint64_t updates = 0;          // SourceUpdates produced
  uint64_t malformed = 0;        // objects / lines skipped
  uint64_t reconnects = 0;       // retries after an error or a broken stream
  std::string last_error;        // "" until something failed
};

struct K8sApiStats {
  K8sApiResourceStats services;
  K8sApiResourceStats slices;
};

class ResourceWatcher;  // one per resource, in k8s_api_source.cc

class K8sApiSource {
 public:
  static absl::StatusOr<std::unique_ptr<K8sApiSource>> Create(K8sApiOptions options);
  ~K8sApiSource();  // Stop()s
  K8sApiSource(const K8sApiSource&) = delete;
  K8sApiSource& operator=(const K8sApiSource&) = delete;

  // Starts one list+watch thread per resource. Failures to reach the server
  // are not errors here: they are retried with backoff and show in stats().
  absl::Status Start();
  // Interrupts transfers and joins the threads (prompt, no timeout wait).
  void Stop();

  // An eventfd: readable when TakeUpdates() has something, and once when the
  // source becomes Synced(). Poll it for POLLIN.
  int fd() const { return fd_; }
  // Pending updates, oldest first, at most one per source key (a later change
  // of the same object replaces an earlier pending one). Empty until Synced():
  // the first batch holds both initial lists, so Services are never programmed
  // without their EndpointSlices (kube-proxy waits for its caches likewise).
  std::vector<SourceUpdate> TakeUpdates();

  bool Synced() const;
  // Blocks until Synced() or `timeout`; returns Synced().
  bool WaitForSync(absl::Duration timeout) const;
  K8sApiStats stats() const;
  const std::string& server() const { return options_.access.server; }

 private:
  explicit K8sApiSource(K8sApiOptions options, int fd);
  void Deliver(std::vector<SourceUpdate> updates);
  void MarkSynced(int which);
  void SignalLocked();                                                // mu_ held
  bool SyncedLocked() const { return synced_[0] && synced_[1]; }      // mu_ held

  const K8sApiOptions options_;
  const int fd_;
  std::unique_ptr<ResourceWatcher> watchers_[2];  // Services, EndpointSlices
  bool started_ = false;

  // std::mutex rather than absl::Mutex: ThreadSanitizer sees it (Debian's
  // Abseil is not instrumented), and this is the class that needs checking.
  mutable std::mutex mu_;
  mutable std::condition_variable synced_cv_;
  // Guarded by mu_:
  bool synced_[2] = {false, false};
  bool signalled_ = false;
  std::vector<SourceUpdate> pending_;
  absl::flat_hash_map<std::string, size_t> pending_index_;
};

// The source key of one API object: "api/<Kind>/<ns>/<name>".
std::string ApiSourceKey(std::string_view kind, const NamespacedName& id);

}  // namespace kpx::controller

// A fake Kubernetes API server for the API source's tests: real HTTP/1.1 on
// 127.0.0.1 (optionally TLS, with a CA made at runtime by TestPki), serving
// paginated lists and chunked watch streams of Services and EndpointSlices,
// with knobs for what real servers and networks do: 410 expiry, abrupt
// disconnects, garbage lines, stalls, errors. Every request is recorded.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

typedef struct ssl_ctx_st SSL_CTX;

namespace kpx::testing {

// A test CA, a server certificate for 127.0.0.1/localhost and a client
// certificate (CN "kpx-test-client") signed by it, and an unrelated CA, all
// generated in memory (EC P-256, valid for a day). Nothing is committed.
struct TestPki {
  static absl::StatusOr<TestPki> Generate();
  std::string ca_pem;
  std::string server_cert_pem;
  std::string server_key_pem;
  std::string client_cert_pem;
  std::string client_key_pem;
  std::string other_ca_pem;
};

struct FakeRequest {
  std::string method;
  std::string path;                           // without the query
  std::map<std::string, std::string> query;   // decoded
  std::map<std::string, std::string> headers; // lower-case names
  std::string client_cn;                      // TLS client certificate CN, if any
  bool IsWatch() const;
  std::string Param(const std::string& k) const;
};

class FakeApiServer {
 public:
  // How a watch from a compacted resourceVersion is refused.
  enum class ExpiryMode {
    kErrorEvent,  // 200, then an ERROR event (code 410, reason Expired), as the watch cache does
    kHttp410,     // HTTP 410 Gone with a Status body
  };

  struct Options {
    bool tls = false;
    std::string cert_pem, key_pem;  // the server's identity (tls)
    std::string client_ca_pem;      // tls: require client certificates signed by this CA
    std::string required_token;     // 401 unless "Authorization: Bearer <token>"
    bool split_events = false;      // write each watch event in two chunks, split mid-line
  };

  static absl::StatusOr<std::unique_ptr<FakeApiServer>> Start(Options options);
  ~FakeApiServer();  // closes every connection and joins every thread

  std::string url() const;  // "http(s)://127.0.0.1:PORT"

  // Resources are "services" and "endpointslices". Objects are JSON as the
  // API serves them; kind/apiVersion are filled in when absent.

  // Creates or replaces an object (by namespace/name); watchers get
  // ADDED/MODIFIED. Returns its new resourceVersion.
  int64_t Apply(const std::string& resource, nlohmann::json object);
  int64_t Delete(const std::string& resource, const std::string& ns, const std::string& name);
  // Advances the global resourceVersion (as other resources' writes do) and
  // sends a BOOKMARK carrying it.
  int64_t Bookmark(const std::string& resource);
  // A raw line (not necessarily JSON) into the watch streams, in order with
  // the events.
  void InjectLine(const std::string& resource, const std::string& line);
  // Forgets the history: watches from an older resourceVersion are refused
  // per `mode`. Open watches get an ERROR 410 event and end (kErrorEvent), or
  // break abruptly so that their resume meets the HTTP 410 (kHttp410).
  void Expire(const std::string& resource, ExpiryMode mode = ExpiryMode::kErrorEvent);
  // Closes open watch streams mid-stream, without the final chunk.
  void DisconnectWatches(const std::string& resource);
  // Ends open watch streams cleanly (as the server-side timeout does).
  void EndWatches(const std::string& resource);
  // While stalled, watch streams send nothing (events wait).
  void SetStalled(bool stalled);
  // The next list request with a continue token gets 410 Expired, as when
  // etcd compacted the list's snapshot between pages.
  void ExpireNextContinue();
  // The next `count` requests for `resource` get HTTP `status`.
  void FailNext(const std::string& resource, int status, int count);

  std::vector<FakeRequest> Requests() const;
  int OpenWatches(const std::string& resource) const;
  // Waits (bounded) until `pred` holds over the recorded requests.
  bool WaitForRequests(const std::function<bool(const std::vector<FakeRequest>&)>& pred,
                       absl::Duration timeout) const;
  bool WaitForOpenWatches(const std::string& resource, int n, absl::Duration timeout) const;
  int64_t resource_version() const;

 private:
  struct Entry {
    int64_t rv;
    std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK, or "" for a raw line
    nlohmann::json object;
    std::string raw;
  };
  struct Resource {
    std::map<std::string, nlohmann::json> objects;  // "ns/name" -> object
    std::vector<Entry> history;
    int64_t compacted = 0;  // watches from below this are expired
    ExpiryMode mode = ExpiryMode::kErrorEvent;
    std::deque<int> failures;
  };
  struct Watch {
    std::string resource;
    bool disconnect = false;
    bool end = false;
    bool expire = false;
  };
  struct Snapshot {
    std::vector<nlohmann::json> items;
    int64_t rv = 0;
  };
  class Conn;

  explicit FakeApiServer(Options options) : opts_(std::move(options)) {}
  absl::Status Listen();
  void AcceptLoop();
  void Serve(int fd);
  void Handle(Conn& conn, FakeRequest req);
  void ServeList(Conn& conn, const FakeRequest& req, const std::string& resource);
  void ServeWatch(Conn& conn, const FakeRequest& req, const std::string& resource);
  Resource& Res(const std::string& resource);  // mu_ held
  void Notify();

  const Options opts_;
  int listen_fd_ = -1;
  int port_ = 0;
  SSL_CTX* ssl_ctx_ = nullptr;
  std::thread accept_thread_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool stopping_ = false;
  bool stalled_ = false;
  bool expire_next_continue_ = false;
  int64_t rv_ = 1000;
  int64_t next_snapshot_ = 1;
  std::map<std::string, Resource> resources_;
  std::map<int64_t, Snapshot> snapshots_;
  std::set<Watch*> watches_;
  std::vector<FakeRequest> requests_;
  std::set<int> conn_fds_;
  std::vector<std::thread> conn_threads_;
};

}  // namespace kpx::testing

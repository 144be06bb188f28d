// List+watch of Services and EndpointSlices over libcurl. Each resource has a
// thread with its own curl multi handle (so Stop() can wake a blocked
// transfer at once); the watch body streams through a line buffer, one JSON
// event per line, decoded with the manifest parser's object decoders.
#include "controller/source/k8s_api_source.h"

#include <curl/curl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "controller/manifest_parser.h"
#include "controller/source/k8s_watch_event.h"
#include "glog/logging.h"

namespace kpx::controller {
namespace {

using json = nlohmann::json;

struct ResourceInfo {
  const char* kind;
  const char* api_version;
  const char* path;
};
constexpr ResourceInfo kResources[2] = {
    {"Service", "v1", "/api/v1/services"},
    {"EndpointSlice", "discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices"},
};

constexpr size_t kMaxListBody = size_t{512} << 20;  // one page; lists are paginated
constexpr size_t kMaxLine = size_t{64} << 20;       // one watch event
constexpr size_t kMaxErrorBody = 64 << 10;
constexpr int kMaxListRestarts = 3;                 // expired continue tokens in a row

std::once_flag g_curl_once;
CURLcode g_curl_init = CURLE_OK;

long Ms(absl::Duration d) { return static_cast<long>(absl::ToInt64Milliseconds(d)); }

// The message of a Kubernetes Status object, or the start of the body.
std::string ErrorText(long status, const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) {
    return absl::StrCat("HTTP ", status, ": ", j["message"].get<std::string>());
  }
  return absl::StrCat("HTTP ", status, ": ", body.substr(0, 200));
}

}  // namespace

std::string ApiSourceKey(std::string_view kind, const NamespacedName& id) {
  return absl::StrCat("api/", absl::string_view(kind.data(), kind.size()), "/", id.ns, "/",
                      id.name);
}

// One resource's list+watch loop and the objects it has handed out.
class ResourceWatcher {
 public:
  using EmitFn = std::function<void(std::vector<SourceUpdate>)>;

  ResourceWatcher(const ResourceInfo& res, const K8sApiOptions& opts, EmitFn emit,
                  std::function<void()> on_synced)
      : res_(res), opts_(opts), emit_(std::move(emit)), on_synced_(std::move(on_synced)) {}

  ~ResourceWatcher() {
    if (easy_ != nullptr) curl_easy_cleanup(easy_);
    if (multi_ != nullptr) curl_multi_cleanup(multi_);
  }

  absl::Status Init() {
    multi_ = curl_multi_init();
    easy_ = curl_easy_init();
    if (multi_ == nullptr || easy_ == nullptr) return absl::InternalError("curl init failed");
    return absl::OkStatus();
  }

  void Start() { thread_ = std::thread([this] { Run(); }); }

  void RequestStop() {
    {
      std::lock_guard<std::mutex> l(sleep_mu_);
      stop_ = true;
    }
    sleep_cv_.notify_all();
    stopping_.store(true);
    curl_multi_wakeup(multi_);
  }

  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  K8sApiResourceStats Stats() const {
    std::lock_guard<std::mutex> l(stats_mu_);
    return stats_;
  }

 private:
  enum class Outcome { kOk, kStopped, kExpired, kError, kEnded };

  using Decoded = ApiObject;

  // State of one HTTP transfer, seen by the write callback.
  struct Transfer {
    ResourceWatcher* self = nullptr;
    long status = 0;
    std::string error_body;
    std::function<bool(absl::string_view)> on_body;
  };

  struct Response {
    CURLcode code = CURLE_OK;
    long status = 0;
    std::string error;  // curl's or the server's message
  };

  void Run() {
    absl::Duration backoff = opts_.initial_backoff;
    absl::Duration relist_delay = absl::ZeroDuration();
    bool need_list = true;
    while (!stopping_.load()) {
      Outcome out;
      if (need_list) {
        out = List();
        if (out == Outcome::kOk) {
          need_list = false;
          backoff = opts_.initial_backoff;
          continue;
        }
      } else {
        progress_ = false;
        const absl::Time started = absl::Now();
        out = Watch();
        if (out == Outcome::kExpired) {
          // The server no longer has history from our resourceVersion: take
          // a fresh snapshot and emit only what changed in between.
          LOG(INFO) << res_.kind << " watch expired at resourceVersion " << rv_ << "; relisting";
          Bump(&K8sApiResourceStats::relists);
          need_list = true;
          // The usual case (a resume refused after a disconnect) relists at
          // once; a server that keeps expiring fresh watches is relisted
          // with growing delays, not in a tight loop.
          if (progress_ || absl::Now() - started > absl::Seconds(1)) {
            relist_delay = absl::ZeroDuration();
          } else if (relist_delay == absl::ZeroDuration()) {
            relist_delay = opts_.initial_backoff;
          } else {
            Sleep(relist_delay * absl::Uniform(rng_, 1.0, 1.25));
            relist_delay = std::min(relist_delay * 2, opts_.max_backoff);
          }
          continue;
        }
        if (progress_) backoff = opts_.initial_backoff;
        // A normal end (server timeout) resumes at once, unless the server
        // keeps ending watches immediately (then it is an error in disguise).
        if (out == Outcome::kEnded && (progress_ || absl::Now() - started > absl::Seconds(1))) {
          continue;
        }
      }
      if (out == Outcome::kStopped) return;
      Bump(&K8sApiResourceStats::reconnects);
      Sleep(backoff * absl::Uniform(rng_, 1.0, 1.25));
      backoff = std::min(backoff * 2, opts_.max_backoff);
    }
  }

  // Waits `d` or until RequestStop().
  void Sleep(absl::Duration d) {
    std::unique_lock<std::mutex> l(sleep_mu_);
    sleep_cv_.wait_for(l, absl::ToChronoNanoseconds(d), [this] { return stop_; });
  }

  void Bump(uint64_t K8sApiResourceStats::*counter, uint64_t n = 1) {
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_.*counter += n;
  }

  void RecordError(const std::string& what) {
    LOG(WARNING) << res_.kind << " " << what;
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_.last_error = what;
  }

  void SetResourceVersion(const std::string& rv) {
    if (rv.empty()) return;
    rv_ = rv;
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_.resource_version = rv;
  }

  std::string Url(std::initializer_list<std::pair<const char*, std::string>> params) const {
    std::string url = absl::StrCat(opts_.access.server, res_.path);
    char sep = '?';
    for (const auto& [k, v] : params) {
      if (v.empty()) continue;
      char* esc = curl_easy_escape(easy_, v.data(), static_cast<int>(v.size()));
      absl::StrAppend(&url, std::string(1, sep), k, "=", esc != nullptr ? esc : "");
      curl_free(esc);
      sep = '&';
    }
    return url;
  }

  static size_t WriteCallback(char* p, size_t size, size_t n, void* userdata) {
    auto* t = static_cast<Transfer*>(userdata);
    const size_t len = size * n;
    if (t->status == 0) curl_easy_getinfo(t->self->easy_, CURLINFO_RESPONSE_CODE, &t->status);
    if (t->self->stopping_.load()) return 0;
    if (t->status != 200) {
      t->error_body.append(p, std::min(len, kMaxErrorBody - std::min(kMaxErrorBody,
                                                                       t->error_body.size())));
      return len;
    }
    return t->on_body(absl::string_view(p, len)) ? len : 0;
  }

  // One request on this thread's multi handle, interruptible by RequestStop().
  Response Perform(const std::string& url, bool watch, absl::Duration timeout,
                   std::function<bool(absl::string_view)> on_body) {
    Response r;
    Transfer t{this, 0, "", std::move(on_body)};
    char errbuf[CURL_ERROR_SIZE] = {};
    curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
    std::string token_error;
    std::string token = CurrentToken(opts_.access, &token_error);
    if (!token_error.empty()) {
      // A token file briefly unreadable (rotation): keep using the last
      // token it gave, as client-go's cached token source does.
      RecordError(absl::StrCat("token: ", token_error));
      if (!last_file_token_.empty()) token = last_file_token_;
    } else if (!opts_.access.token_file.empty()) {
      last_file_token_ = token;
    }
    const std::string auth = absl::StrCat("Authorization: Bearer ", token);
    if (!token.empty()) headers = curl_slist_append(headers, auth.c_str());

    CURL* e = easy_;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url.c_str());
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, opts_.user_agent.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, Ms(opts_.connect_timeout));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, Ms(timeout));
    // Stalled streams: less than 1 byte/s for the whole stall window.
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                     std::max(1L, static_cast<long>(absl::ToInt64Seconds(opts_.stall_timeout))));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 15L);
    // Lists can be large; the API server gzips them. Watches stream plain.
    if (!watch) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &ResourceWatcher::WriteCallback);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
    if (!opts_.proxy_from_env) curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    const ClusterAccess& a = opts_.access;
    if (!a.ca_pem.empty()) {
      curl_blob blob{const_cast<char*>(a.ca_pem.data()), a.ca_pem.size(), CURL_BLOB_COPY};
      curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (a.insecure_skip_tls_verify) {
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!a.client_cert_pem.empty()) {
      curl_blob cert{const_cast<char*>(a.client_cert_pem.data()), a.client_cert_pem.size(),
                     CURL_BLOB_COPY};
      curl_blob key{const_cast<char*>(a.client_key_pem.data()), a.client_key_pem.size(),
                    CURL_BLOB_COPY};
      curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
      curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &key);
      curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    }

    curl_multi_add_handle(multi_, e);
    bool done = false;
    CURLMcode mc = CURLM_OK;
    while (!done && !stopping_.load()) {
      int running = 0;
      mc = curl_multi_perform(multi_, &running);
      if (mc != CURLM_OK) break;
      int queued = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == e) {
          r.code = msg->data.result;
          done = true;
        }
      }
      if (done || stopping_.load()) break;
      curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    }
    curl_multi_remove_handle(multi_, e);
    curl_slist_free_all(headers);
    r.status = t.status;
    if (r.status == 0) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
    if (!done) {
      r.code = CURLE_ABORTED_BY_CALLBACK;
      r.error = mc != CURLM_OK ? curl_multi_strerror(mc) : "stopped";
    } else if (r.status != 0 && r.status != 200) {
      r.error = ErrorText(r.status, t.error_body);
    } else if (r.code != CURLE_OK) {
      r.error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(r.code);
    }
    return r;
  }

  // Decodes one object of this resource. `obj` loses resourceVersion and
  // managedFields on the way (they must not count as content changes).
  Decoded Decode(json& obj) { return DecodeApiObject(obj, res_.kind, res_.api_version); }

  void Malformed(const std::string& what) {
    LOG(WARNING) << res_.kind << " skipped: " << what;
    Bump(&K8sApiResourceStats::malformed);
  }

  void UpdateObjectCount() {
    std::lock_guard<std::mutex> l(stats_mu_);
    stats_.objects = known_.size();
  }

  void Emit(std::vector<SourceUpdate> updates) {
    if (updates.empty()) return;
    Bump(&K8sApiResourceStats::updates, updates.size());
    UpdateObjectCount();
    emit_(std::move(updates));
  }

  // Hands out `d` if it is new or differs from what was handed out before.
  void Upsert(Decoded d, absl::Time now, std::vector<SourceUpdate>* out) {
    auto [it, inserted] = known_.try_emplace(d.key, d.hash);
    if (!inserted && it->second == d.hash) return;
    it->second = d.hash;
    out->push_back({SourceUpdate::Kind::kReplace, ApiSourceKey(res_.kind, d.id),
                    *std::move(d.objects), now});
  }

  // ------------------------------------------------------------------ list

  // Lists every page, then replaces the handed-out set by the snapshot,
  // emitting only real differences. Nothing changes unless the whole list
  // arrived: a failure mid-way keeps the previous objects.
  Outcome List() {
    std::vector<Decoded> items;
    absl::flat_hash_set<std::string> present;
    std::string cont;
    std::string list_rv;
    int restarts = 0;
    while (true) {
      std::string body;
      bool too_large = false;
      const std::string url =
          Url({{"labelSelector", opts_.label_selector},
               {"limit", opts_.page_size > 0 ? absl::StrCat(opts_.page_size) : ""},
               {"continue", cont}});
      const Response r = Perform(url, false, opts_.list_timeout, [&](absl::string_view chunk) {
        if (body.size() + chunk.size() > kMaxListBody) {
          too_large = true;
          return false;
        }
        body.append(chunk.data(), chunk.size());
        return true;
      });
      if (stopping_.load()) return Outcome::kStopped;
      Bump(&K8sApiResourceStats::list_pages);
      if (r.status == 410 && !cont.empty() && restarts < kMaxListRestarts) {
        // The continue token expired mid-list: start over from the first page.
        LOG(INFO) << res_.kind << " list continue token expired; listing again";
        ++restarts;
        cont.clear();
        items.clear();
        present.clear();
        continue;
      }
      if (too_large) {
        RecordError(absl::StrCat("list: a page exceeded ", kMaxListBody >> 20, " MiB"));
        return Outcome::kError;
      }
      if (r.status != 200 || r.code != CURLE_OK) {
        RecordError(absl::StrCat("list ", url, ": ", r.error));
        return Outcome::kError;
      }
      json page = json::parse(body, nullptr, false);
      if (!page.is_object() || (page.contains("items") && !page["items"].is_array() &&
                                !page["items"].is_null())) {
        RecordError(absl::StrCat("list ", url, ": response is not a ", res_.kind, "List"));
        return Outcome::kError;
      }
      if (page.contains("items") && page["items"].is_array()) {
        for (json& item : page["items"]) {
          Decoded d = Decode(item);
          if (!d.key.empty()) present.insert(d.key);
          if (!d.objects) {
            Malformed(absl::StrCat(d.key.empty() ? "list item: " : "", d.error));
            continue;
          }
          items.push_back(std::move(d));
        }
      }
      list_rv = JsonStringAt(page, "metadata", "resourceVersion");
      cont = JsonStringAt(page, "metadata", "continue");
      if (cont.empty()) break;
    }
    if (list_rv.empty()) {
      RecordError("list: response has no metadata.resourceVersion");
      return Outcome::kError;
    }

    const absl::Time now = absl::Now();
    std::vector<SourceUpdate> out;
    // Gone from the snapshot: removed. A malformed object that is still
    // present keeps its last good version, as a broken manifest file does.
    std::vector<std::string> gone;
    for (const auto& [key, hash] : known_) {
      if (!present.contains(key)) gone.push_back(key);
    }
    std::sort(gone.begin(), gone.end());
    for (const std::string& key : gone) {
      known_.erase(key);
      const size_t slash = key.find('/');
      const NamespacedName id{key.substr(0, slash), key.substr(slash + 1)};
      out.push_back({SourceUpdate::Kind::kRemove, ApiSourceKey(res_.kind, id), {}, now});
    }
    for (Decoded& d : items) Upsert(std::move(d), now, &out);
    SetResourceVersion(list_rv);
    Emit(std::move(out));
    UpdateObjectCount();
    if (!listed_once_) {
      listed_once_ = true;
      {
        std::lock_guard<std::mutex> l(stats_mu_);
        stats_.synced = true;
      }
      on_synced_();
    }
    return Outcome::kOk;
  }

  // ------------------------------------------------------------------ watch

  enum class StreamEnd { kNone, kExpired, kError };

  Outcome Watch() {
    const int timeout_s = static_cast<int>(absl::ToInt64Seconds(opts_.min_watch_timeout) *
                                           absl::Uniform(rng_, 1.0, 2.0));
    const std::string url = Url({{"watch", "true"},
                                 {"allowWatchBookmarks", "true"},
                                 {"labelSelector", opts_.label_selector},
                                 {"resourceVersion", rv_},
                                 {"timeoutSeconds", absl::StrCat(std::max(1, timeout_s))}});
    Bump(&K8sApiResourceStats::watches);
    std::string line;
    stream_end_ = StreamEnd::kNone;
    stream_error_.clear();
    bool line_too_long = false;
    const Response r = Perform(
        url, true, absl::Seconds(timeout_s) + absl::Minutes(1), [&](absl::string_view chunk) {
          while (!chunk.empty()) {
            const size_t nl = chunk.find('\n');
            const absl::string_view part = chunk.substr(0, nl);
            if (line.size() + part.size() > kMaxLine) {
              line_too_long = true;
              return false;
            }
            line.append(part.data(), part.size());
            if (nl == absl::string_view::npos) break;
            chunk.remove_prefix(nl + 1);
            const bool keep_going = HandleLine(line);
            line.clear();
            if (!keep_going) return false;
          }
          return true;
        });
    if (stopping_.load()) return Outcome::kStopped;
    if (stream_end_ == StreamEnd::kExpired || r.status == 410) return Outcome::kExpired;
    if (stream_end_ == StreamEnd::kError) {
      RecordError(absl::StrCat("watch: ", stream_error_));
      return Outcome::kError;
    }
    if (line_too_long) {
      RecordError(absl::StrCat("watch: an event exceeded ", kMaxLine >> 20, " MiB"));
      return Outcome::kError;
    }
    if (r.status != 200 || r.code != CURLE_OK) {
      RecordError(absl::StrCat("watch from resourceVersion ", rv_, ": ", r.error,
                               r.status == 200 ? " (resuming)" : ""));
      return Outcome::kError;
    }
    if (!line.empty()) HandleLine(line);  // a last event without its newline
    return Outcome::kEnded;
  }

  // One watch event. Returns false to end the stream (ERROR events).
  bool HandleLine(absl::string_view text) {
    WatchEvent ev = ParseWatchLine(std::string_view(text.data(), text.size()));
    if (ev.blank) return true;
    if (!ev.error.empty()) {
      Malformed(ev.error);
      return true;
    }
    const std::string& type = ev.type;
    json& obj = ev.object;
    if (type == "BOOKMARK") {
      Bump(&K8sApiResourceStats::bookmarks);
      SetResourceVersion(JsonStringAt(obj, "metadata", "resourceVersion"));
      progress_ = true;
      return true;
    }
    if (type == "ERROR") {
      const long code = obj.is_object() && obj.contains("code") && obj["code"].is_number()
                            ? obj["code"].get<long>()
                            : 0;
      const std::string reason =
          obj.is_object() && obj.contains("reason") && obj["reason"].is_string()
              ? obj["reason"].get<std::string>()
              : "";
      if (code == 410 || reason == "Expired" || reason == "Gone") {
        stream_end_ = StreamEnd::kExpired;
      } else {
        stream_end_ = StreamEnd::kError;
        stream_error_ = absl::StrCat("ERROR event: ", obj.dump().substr(0, 300));
      }
      return false;
    }
    if (type != "ADDED" && type != "MODIFIED" && type != "DELETED") {
      Malformed(absl::StrCat("unknown watch event type \"", type, "\""));
      return true;
    }
    Bump(&K8sApiResourceStats::events);
    progress_ = true;
    Decoded d = Decode(obj);
    SetResourceVersion(d.resource_version);
    const absl::Time now = absl::Now();
    std::vector<SourceUpdate> out;
    if (type == "DELETED") {
      // Only the key matters; a malformed body still names what went away.
      if (!d.key.empty() && known_.erase(d.key) > 0) {
        out.push_back({SourceUpdate::Kind::kRemove, ApiSourceKey(res_.kind, d.id), {}, now});
      }
    } else if (!d.objects) {
      Malformed(absl::StrCat(d.key.empty() ? "watch object: " : "", d.error,
                             d.key.empty() || !known_.contains(d.key)
                                 ? ""
                                 : " (keeping its previous version)"));
    } else {
      Upsert(std::move(d), now, &out);
    }
    Emit(std::move(out));
    return true;
  }

  const ResourceInfo res_;
  const K8sApiOptions& opts_;
  const EmitFn emit_;
  const std::function<void()> on_synced_;
  CURLM* multi_ = nullptr;
  CURL* easy_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
  bool stop_ = false;  // guarded by sleep_mu_
  absl::BitGen rng_;

  // Worker-thread state.
  absl::flat_hash_map<std::string, uint64_t> known_;  // "ns/name" -> content hash
  std::string rv_;
  std::string last_file_token_;
  bool listed_once_ = false;
  bool progress_ = false;
  StreamEnd stream_end_ = StreamEnd::kNone;
  std::string stream_error_;

  mutable std::mutex stats_mu_;
  K8sApiResourceStats stats_;  // guarded by stats_mu_
};

// ------------------------------------------------------------------ source

absl::StatusOr<std::unique_ptr<K8sApiSource>> K8sApiSource::Create(K8sApiOptions options) {
  if (options.access.server.empty()) {
    return absl::InvalidArgumentError("Kubernetes API source: no server URL");
  }
  if (options.min_watch_timeout < absl::Seconds(1) || options.stall_timeout < absl::Seconds(1) ||
      options.initial_backoff <= absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff) {
    return absl::InvalidArgumentError(
        "Kubernetes API source: watch and stall timeouts must be >= 1s, backoff positive");
  }
  std::call_once(g_curl_once, [] { g_curl_init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (g_curl_init != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(g_curl_init)));
  }
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  std::unique_ptr<K8sApiSource> src(new K8sApiSource(std::move(options), fd));
  for (int i = 0; i < 2; ++i) {
    src->watchers_[i] = std::make_unique<ResourceWatcher>(
        kResources[i], src->options_,
        [s = src.get()](std::vector<SourceUpdate> u) { s->Deliver(std::move(u)); },
        [s = src.get(), i] { s->MarkSynced(i); });
    absl::Status st = src->watchers_[i]->Init();
    if (!st.ok()) return st;
  }
  return src;
}

K8sApiSource::K8sApiSource(K8sApiOptions options, int fd) : options_(std::move(options)), fd_(fd) {}

K8sApiSource::~K8sApiSource() {
  Stop();
  watchers_[0].reset();
  watchers_[1].reset();
  close(fd_);
}

absl::Status K8sApiSource::Start() {
  if (started_) return absl::FailedPreconditionError("K8sApiSource already started");
  started_ = true;
  LOG(INFO) << "watching Services and EndpointSlices at " << options_.access.server << " ("
            << options_.access.origin << ")";
  for (auto& w : watchers_) w->Start();
  return absl::OkStatus();
}

void K8sApiSource::Stop() {
  for (auto& w : watchers_) {
    if (w) w->RequestStop();
  }
  for (auto& w : watchers_) {
    if (w) w->Join();
  }
}

void K8sApiSource::SignalLocked() {
  if (signalled_ || !synced_[0] || !synced_[1]) return;
  const uint64_t one = 1;
  if (write(fd_, &one, sizeof(one)) == sizeof(one)) signalled_ = true;
}

void K8sApiSource::Deliver(std::vector<SourceUpdate> updates) {
  std::lock_guard<std::mutex> l(mu_);
  for (SourceUpdate& u : updates) {
    auto [it, inserted] = pending_index_.try_emplace(u.source, pending_.size());
    if (inserted) {
      pending_.push_back(std::move(u));
      continue;
    }
    // Same object changed again before the reconciler took it: the latest
    // content wins, the earliest observation time stays (latency metrics).
    SourceUpdate& p = pending_[it->second];
    p.kind = u.kind;
    p.objects = std::move(u.objects);
  }
  if (!pending_.empty()) SignalLocked();
}

void K8sApiSource::MarkSynced(int which) {
  {
    std::lock_guard<std::mutex> l(mu_);
    synced_[which] = true;
    SignalLocked();  // wake the loop even when the cluster has no objects
  }
  synced_cv_.notify_all();
}

std::vector<SourceUpdate> K8sApiSource::TakeUpdates() {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t count;
  while (read(fd_, &count, sizeof(count)) > 0) {
  }
  signalled_ = false;
  if (!synced_[0] || !synced_[1]) return {};
  std::vector<SourceUpdate> out;
  out.swap(pending_);
  pending_index_.clear();
  return out;
}

bool K8sApiSource::Synced() const {
  std::lock_guard<std::mutex> l(mu_);
  return SyncedLocked();
}

bool K8sApiSource::WaitForSync(absl::Duration timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  return synced_cv_.wait_for(l, absl::ToChronoNanoseconds(timeout),
                             [this] { return SyncedLocked(); });
}

K8sApiStats K8sApiSource::stats() const {
  return {watchers_[0]->Stats(), watchers_[1]->Stats()};
}

}  // namespace kpx::controller

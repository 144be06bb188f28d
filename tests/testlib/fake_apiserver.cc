// FakeApiServer: a thread per connection, one request per connection
// (Connection: close), plain sockets or OpenSSL on top. The object store and
// the watch history live under one mutex; watch threads wait on a condition
// variable for new history entries or commands (disconnect, end, expire).
#include "tests/testlib/fake_apiserver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace kpx::testing {
namespace {

using json = nlohmann::json;

std::string SslError(const char* what) {
  char buf[256] = {};
  ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
  return absl::StrCat(what, ": ", buf);
}

// --------------------------------------------------------------- TestPki

struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertDeleter {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyDeleter>;
using Cert = std::unique_ptr<X509, CertDeleter>;

bool AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// issuer == nullptr: self-signed CA.
absl::StatusOr<Cert> MakeCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key,
                              const char* kind) {
  static int64_t serial = time(nullptr);
  Cert cert(X509_new());
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set_int64(X509_get_serialNumber(x), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : x;
  const std::string k = kind;
  bool ok = AddExt(x, signer, NID_subject_key_identifier, "hash");
  if (k == "ca") {
    ok = ok && AddExt(x, signer, NID_basic_constraints, "critical,CA:TRUE") &&
         AddExt(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && AddExt(x, signer, NID_authority_key_identifier, "keyid:always") &&
         AddExt(x, signer, NID_basic_constraints, "critical,CA:FALSE") &&
         AddExt(x, signer, NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
         AddExt(x, signer, NID_ext_key_usage, k == "server" ? "serverAuth" : "clientAuth");
    if (k == "server") ok = ok && AddExt(x, signer, NID_subject_alt_name,
                                         "IP:127.0.0.1,DNS:localhost");
  }
  if (!ok) return absl::InternalError(SslError("certificate extension"));
  if (X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0) {
    return absl::InternalError(SslError("X509_sign"));
  }
  return cert;
}

std::string ToPem(X509* cert, EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (cert != nullptr) PEM_write_bio_X509(bio, cert);
  if (key != nullptr) PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, n);
  BIO_free(bio);
  return out;
}

// --------------------------------------------------------------- HTTP bits

std::string PercentDecode(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int v = 0;
      if (absl::SimpleHexAtoi(s.substr(i + 1, 2), &v)) {
        out.push_back(static_cast<char>(v));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

std::string StatusJson(int code, const std::string& reason, const std::string& message) {
  return json{{"kind", "Status"},  {"apiVersion", "v1"}, {"metadata", json::object()},
              {"status", "Failure"}, {"message", message}, {"reason", reason},
              {"code", code}}
      .dump();
}

const char* Reason(int code) {
  switch (code) {
    case 200: return "OK";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 410: return "Gone";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

struct ResourceType {
  const char* name;
  const char* path;
  const char* kind;
  const char* api_version;
};
constexpr ResourceType kTypes[] = {
    {"services", "/api/v1/services", "Service", "v1"},
    {"endpointslices", "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice",
     "discovery.k8s.io/v1"},
};

const ResourceType* TypeOf(const std::string& name_or_path) {
  for (const ResourceType& t : kTypes) {
    if (name_or_path == t.name || name_or_path == t.path) return &t;
  }
  return nullptr;
}

std::string KeyOf(const json& obj) {
  const json& m = obj.at("metadata");
  return absl::StrCat(m.value("namespace", "default"), "/", m.value("name", ""));
}

// labelSelector subset: "!k", "k", "k=v", "k==v", "k!=v", comma-separated.
bool Matches(const json& obj, const std::string& selector) {
  if (selector.empty()) return true;
  json labels = json::object();
  if (obj.contains("metadata") && obj["metadata"].contains("labels")) {
    labels = obj["metadata"]["labels"];
  }
  for (absl::string_view req : absl::StrSplit(selector, ',', absl::SkipEmpty())) {
    req = absl::StripAsciiWhitespace(req);
    if (req.empty()) continue;
    if (req.front() == '!') {
      if (labels.contains(std::string(req.substr(1)))) return false;
    } else if (size_t ne = req.find("!="); ne != req.npos) {
      const std::string k(req.substr(0, ne));
      if (labels.contains(k) && labels[k] == std::string(req.substr(ne + 2))) return false;
    } else if (size_t eq = req.find('='); eq != req.npos) {
      const std::string k(req.substr(0, eq));
      absl::string_view v = req.substr(eq + 1);
      if (!v.empty() && v.front() == '=') v.remove_prefix(1);
      if (!labels.contains(k) || labels[k] != std::string(v)) return false;
    } else if (!labels.contains(std::string(req))) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<TestPki> TestPki::Generate() {
  Key ca_key(EVP_EC_gen("P-256"));
  Key server_key(EVP_EC_gen("P-256"));
  Key client_key(EVP_EC_gen("P-256"));
  Key other_key(EVP_EC_gen("P-256"));
  if (!ca_key || !server_key || !client_key || !other_key) {
    return absl::InternalError(SslError("EVP_EC_gen"));
  }
  auto ca = MakeCert(ca_key.get(), "kpx-test-ca", nullptr, nullptr, "ca");
  if (!ca.ok()) return ca.status();
  auto server = MakeCert(server_key.get(), "kpx-test-apiserver", ca->get(), ca_key.get(), "server");
  if (!server.ok()) return server.status();
  auto client = MakeCert(client_key.get(), "kpx-test-client", ca->get(), ca_key.get(), "client");
  if (!client.ok()) return client.status();
  auto other = MakeCert(other_key.get(), "kpx-unrelated-ca", nullptr, nullptr, "ca");
  if (!other.ok()) return other.status();
  TestPki pki;
  pki.ca_pem = ToPem(ca->get(), nullptr);
  pki.server_cert_pem = ToPem(server->get(), nullptr);
  pki.server_key_pem = ToPem(nullptr, server_key.get());
  pki.client_cert_pem = ToPem(client->get(), nullptr);
  pki.client_key_pem = ToPem(nullptr, client_key.get());
  pki.other_ca_pem = ToPem(other->get(), nullptr);
  return pki;
}

bool FakeRequest::IsWatch() const {
  const std::string w = Param("watch");
  return w == "true" || w == "1";
}

std::string FakeRequest::Param(const std::string& k) const {
  auto it = query.find(k);
  return it == query.end() ? "" : it->second;
}

// One accepted connection: plain or TLS reads and writes.
class FakeApiServer::Conn {
 public:
  Conn(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  ~Conn() {
    if (ssl_ != nullptr) SSL_free(ssl_);
  }
  ssize_t Read(char* buf, size_t n) {
    if (ssl_ != nullptr) {
      const int r = SSL_read(ssl_, buf, static_cast<int>(n));
      return r > 0 ? r : -1;
    }
    ssize_t r;
    do {
      r = recv(fd_, buf, n, 0);
    } while (r < 0 && errno == EINTR);
    return r;
  }
  bool Write(absl::string_view data) {
    while (!data.empty()) {
      ssize_t w;
      if (ssl_ != nullptr) {
        const int r = SSL_write(ssl_, data.data(), static_cast<int>(data.size()));
        w = r > 0 ? r : -1;
      } else {
        w = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
      }
      if (w <= 0) return false;
      data.remove_prefix(w);
    }
    return true;
  }
  bool Chunk(absl::string_view data) {
    return Write(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"));
  }
  void Finish() {
    Write("0\r\n\r\n");
    if (ssl_ != nullptr) SSL_shutdown(ssl_);
  }
  SSL* ssl() const { return ssl_; }

 private:
  int fd_;
  SSL* ssl_;
};

absl::StatusOr<std::unique_ptr<FakeApiServer>> FakeApiServer::Start(Options options) {
  // An OpenSSL write to a peer that hung up raises SIGPIPE; tests want EPIPE.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<FakeApiServer> s(new FakeApiServer(std::move(options)));
  for (const ResourceType& t : kTypes) s->resources_[t.name];
  if (absl::Status st = s->Listen(); !st.ok()) return st;
  s->accept_thread_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  return s;
}

absl::Status FakeApiServer::Listen() {
  if (opts_.tls) {
    ssl_ctx_ = SSL_CTX_new(TLS_server_method());
    BIO* cb = BIO_new_mem_buf(opts_.cert_pem.data(), static_cast<int>(opts_.cert_pem.size()));
    X509* cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    BIO_free(cb);
    BIO* kb = BIO_new_mem_buf(opts_.key_pem.data(), static_cast<int>(opts_.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    const bool ok = cert != nullptr && key != nullptr &&
                    SSL_CTX_use_certificate(ssl_ctx_, cert) == 1 &&
                    SSL_CTX_use_PrivateKey(ssl_ctx_, key) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!ok) return absl::InternalError(SslError("server certificate"));
    if (!opts_.client_ca_pem.empty()) {
      BIO* ab = BIO_new_mem_buf(opts_.client_ca_pem.data(),
                                static_cast<int>(opts_.client_ca_pem.size()));
      X509* ca = PEM_read_bio_X509(ab, nullptr, nullptr, nullptr);
      BIO_free(ab);
      if (ca == nullptr) return absl::InternalError(SslError("client CA"));
      X509_STORE_add_cert(SSL_CTX_get_cert_store(ssl_ctx_), ca);
      X509_free(ca);
      SSL_CTX_set_verify(ssl_ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return absl::ErrnoToStatus(errno, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 64) != 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return absl::ErrnoToStatus(errno, "bind/listen on 127.0.0.1");
  }
  port_ = ntohs(addr.sin_port);
  return absl::OkStatus();
}

FakeApiServer::~FakeApiServer() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    for (int fd : conn_fds_) shutdown(fd, SHUT_RDWR);
  }
  cv_.notify_all();
  if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> l(mu_);
    threads.swap(conn_threads_);
  }
  for (std::thread& t : threads) t.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
}

std::string FakeApiServer::url() const {
  return absl::StrCat(opts_.tls ? "https" : "http", "://127.0.0.1:", port_);
}

void FakeApiServer::AcceptLoop() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    const int err = errno;
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) {
      if (fd >= 0) close(fd);
      return;
    }
    if (fd < 0) {
      if (err == EINTR || err == ECONNABORTED) continue;
      return;
    }
    // A client that connects and says nothing must not pin a thread forever.
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    conn_fds_.insert(fd);
    conn_threads_.emplace_back([this, fd] { Serve(fd); });
  }
}

void FakeApiServer::Serve(int fd) {
  SSL* ssl = nullptr;
  std::string client_cn;
  bool ok = true;
  if (ssl_ctx_ != nullptr) {
    ssl = SSL_new(ssl_ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
      ok = false;  // e.g. the client refused our certificate
    } else if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      char cn[256] = {};
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
      client_cn = cn;
      X509_free(peer);
    }
  }
  {
    Conn conn(fd, ssl);
    std::string buf;
    char tmp[4096];
    size_t end = std::string::npos;
    while (ok && (end = buf.find("\r\n\r\n")) == std::string::npos && buf.size() < 65536) {
      const ssize_t n = conn.Read(tmp, sizeof(tmp));
      if (n <= 0) break;
      buf.append(tmp, n);
    }
    if (ok && end != std::string::npos) {
      FakeRequest req;
      req.client_cn = client_cn;
      std::vector<std::string> lines = absl::StrSplit(buf.substr(0, end), "\r\n");
      std::vector<std::string> first = absl::StrSplit(lines[0], ' ');
      if (first.size() >= 2) {
        req.method = first[0];
        const std::string target = first[1];
        const size_t q = target.find('?');
        req.path = target.substr(0, q);
        if (q != std::string::npos) {
          for (absl::string_view kv : absl::StrSplit(target.substr(q + 1), '&', absl::SkipEmpty())) {
            const size_t eq = kv.find('=');
            req.query[PercentDecode(kv.substr(0, eq))] =
                eq == kv.npos ? "" : PercentDecode(kv.substr(eq + 1));
          }
        }
        for (size_t i = 1; i < lines.size(); ++i) {
          const size_t colon = lines[i].find(':');
          if (colon == std::string::npos) continue;
          req.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
              std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
        }
        Handle(conn, std::move(req));
      }
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  conn_fds_.erase(fd);
  close(fd);
}

FakeApiServer::Resource& FakeApiServer::Res(const std::string& resource) {
  return resources_.at(resource);
}

void FakeApiServer::Notify() { cv_.notify_all(); }

void FakeApiServer::Handle(Conn& conn, FakeRequest req) {
  auto respond = [&](int code, const std::string& body) {
    conn.Write(absl::StrCat("HTTP/1.1 ", code, " ", Reason(code),
                            "\r\nContent-Type: application/json\r\nContent-Length: ",
                            body.size(), "\r\nConnection: close\r\n\r\n", body));
    if (conn.ssl() != nullptr) SSL_shutdown(conn.ssl());
  };
  const ResourceType* type = TypeOf(req.path);
  int fail = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    requests_.push_back(req);
    if (type != nullptr && !Res(type->name).failures.empty()) {
      fail = Res(type->name).failures.front();
      Res(type->name).failures.pop_front();
    }
  }
  Notify();
  if (!opts_.required_token.empty() &&
      req.headers["authorization"] != "Bearer " + opts_.required_token) {
    respond(401, StatusJson(401, "Unauthorized", "Unauthorized"));
    return;
  }
  if (req.method != "GET" || type == nullptr) {
    respond(404, StatusJson(404, "NotFound", "the server could not find the requested resource"));
    return;
  }
  if (fail != 0) {
    respond(fail, StatusJson(fail, "InternalError", "injected failure"));
    return;
  }
  if (req.IsWatch()) {
    ServeWatch(conn, req, type->name);
  } else {
    ServeList(conn, req, type->name);
  }
}

void FakeApiServer::ServeList(Conn& conn, const FakeRequest& req, const std::string& resource) {
  const ResourceType* type = TypeOf(resource);
  std::unique_lock<std::mutex> l(mu_);
  Snapshot snap;
  size_t offset = 0;
  int64_t id = 0;
  if (const std::string cont = req.Param("continue"); !cont.empty()) {
    std::pair<std::string, std::string> parts = absl::StrSplit(cont, ':');
    auto it = absl::SimpleAtoi(parts.first, &id) ? snapshots_.find(id) : snapshots_.end();
    if (expire_next_continue_) {
      snapshots_.clear();
      it = snapshots_.end();
      expire_next_continue_ = false;
    }
    if (it == snapshots_.end() || !absl::SimpleAtoi(parts.second, &offset)) {
      l.unlock();
      const std::string body = StatusJson(
          410, "Expired", "The provided continue parameter is too old to display a consistent list result.");
      conn.Write(absl::StrCat("HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nContent-Length: ",
                              body.size(), "\r\nConnection: close\r\n\r\n", body));
      return;
    }
    snap = it->second;
  } else {
    snap.rv = rv_;
    for (const auto& [key, obj] : Res(resource).objects) {
      if (!Matches(obj, req.Param("labelSelector"))) continue;
      json item = obj;
      item.erase("kind");  // list items carry no kind/apiVersion
      item.erase("apiVersion");
      snap.items.push_back(std::move(item));
    }
    id = next_snapshot_++;
  }
  size_t limit = snap.items.size();
  if (int64_t lim = 0; absl::SimpleAtoi(req.Param("limit"), &lim) && lim > 0) {
    limit = static_cast<size_t>(lim);
  }
  const size_t stop = std::min(snap.items.size(), offset + limit);
  json list = {{"kind", absl::StrCat(type->kind, "List")},
               {"apiVersion", type->api_version},
               {"metadata", {{"resourceVersion", std::to_string(snap.rv)}}},
               {"items", json::array()}};
  for (size_t i = offset; i < stop; ++i) list["items"].push_back(snap.items[i]);
  if (stop < snap.items.size()) {
    list["metadata"]["continue"] = absl::StrCat(id, ":", stop);
    snapshots_[id] = std::move(snap);
  }
  l.unlock();
  const std::string body = list.dump();
  conn.Write(absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ",
                          body.size(), "\r\nConnection: close\r\n\r\n", body));
  if (conn.ssl() != nullptr) SSL_shutdown(conn.ssl());
}

void FakeApiServer::ServeWatch(Conn& conn, const FakeRequest& req, const std::string& resource) {
  const std::string selector = req.Param("labelSelector");
  int64_t from = 0;
  int64_t timeout_s = 0;
  if (!absl::SimpleAtoi(req.Param("timeoutSeconds"), &timeout_s)) timeout_s = 0;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::seconds(timeout_s > 0 ? timeout_s : 3600);
  const std::string expired_event =
      json{{"type", "ERROR"}, {"object", json::parse(StatusJson(410, "Expired", "too old resource version"))}}
          .dump() + "\n";
  Watch w{resource};
  size_t cursor = 0;
  bool expired_at_start = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    Resource& res = Res(resource);
    if (!absl::SimpleAtoi(req.Param("resourceVersion"), &from)) from = rv_;
    if (from < res.compacted) {
      if (res.mode == ExpiryMode::kHttp410) {
        const std::string body = StatusJson(410, "Expired", "too old resource version");
        conn.Write(absl::StrCat("HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\n"
                                "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body));
        return;
      }
      expired_at_start = true;
    }
    while (cursor < res.history.size() && res.history[cursor].rv <= from) ++cursor;
    if (!expired_at_start) watches_.insert(&w);
  }
  bool ok = conn.Write(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
      "Connection: close\r\n\r\n");
  if (expired_at_start) {
    if (ok && conn.Chunk(expired_event)) conn.Finish();
    return;
  }
  Notify();
  bool clean = true;
  std::unique_lock<std::mutex> l(mu_);
  while (ok) {
    Resource& res = Res(resource);
    cv_.wait_until(l, deadline, [&] {
      return stopping_ || w.disconnect || w.end || w.expire ||
             (!stalled_ && cursor < res.history.size());
    });
    if (stopping_ || w.disconnect) {
      clean = false;
      break;
    }
    std::vector<std::string> lines;
    while (!stalled_ && cursor < res.history.size()) {
      const Entry& e = res.history[cursor++];
      if (e.type.empty()) {
        lines.push_back(e.raw + "\n");
      } else if (e.type == "BOOKMARK" || Matches(e.object, selector)) {
        lines.push_back(json{{"type", e.type}, {"object", e.object}}.dump() + "\n");
      }
    }
    const bool expire = w.expire;
    const bool end = w.end || std::chrono::steady_clock::now() >= deadline;
    l.unlock();
    for (const std::string& line : lines) {
      if (opts_.split_events && line.size() > 2) {
        // Split mid-line, with a flush in between: the client must buffer.
        ok = ok && conn.Chunk(absl::string_view(line).substr(0, line.size() / 2)) &&
             conn.Chunk(absl::string_view(line).substr(line.size() / 2));
      } else {
        ok = ok && conn.Chunk(line);
      }
    }
    if (ok && expire) conn.Chunk(expired_event);
    l.lock();
    if (expire || end) break;
  }
  watches_.erase(&w);
  l.unlock();
  Notify();
  if (ok && clean) conn.Finish();  // else: no final chunk, the client sees a broken stream
}

int64_t FakeApiServer::Apply(const std::string& resource, json object) {
  const ResourceType* type = TypeOf(resource);
  std::lock_guard<std::mutex> l(mu_);
  Resource& res = Res(resource);
  if (!object.contains("kind")) object["kind"] = type->kind;
  if (!object.contains("apiVersion")) object["apiVersion"] = type->api_version;
  if (!object["metadata"].contains("namespace")) object["metadata"]["namespace"] = "default";
  object["metadata"]["resourceVersion"] = std::to_string(++rv_);
  const std::string key = KeyOf(object);
  const bool existed = res.objects.contains(key);
  res.objects[key] = object;
  res.history.push_back({rv_, existed ? "MODIFIED" : "ADDED", std::move(object), ""});
  cv_.notify_all();
  return rv_;
}

int64_t FakeApiServer::Delete(const std::string& resource, const std::string& ns,
                              const std::string& name) {
  std::lock_guard<std::mutex> l(mu_);
  Resource& res = Res(resource);
  auto it = res.objects.find(ns + "/" + name);
  if (it == res.objects.end()) return rv_;
  json object = std::move(it->second);
  res.objects.erase(it);
  object["metadata"]["resourceVersion"] = std::to_string(++rv_);
  res.history.push_back({rv_, "DELETED", std::move(object), ""});
  cv_.notify_all();
  return rv_;
}

int64_t FakeApiServer::Bookmark(const std::string& resource) {
  const ResourceType* type = TypeOf(resource);
  std::lock_guard<std::mutex> l(mu_);
  ++rv_;
  Res(resource).history.push_back(
      {rv_, "BOOKMARK",
       json{{"kind", type->kind},
            {"apiVersion", type->api_version},
            {"metadata", {{"resourceVersion", std::to_string(rv_)}}}},
       ""});
  cv_.notify_all();
  return rv_;
}

void FakeApiServer::InjectLine(const std::string& resource, const std::string& line) {
  std::lock_guard<std::mutex> l(mu_);
  Res(resource).history.push_back({rv_, "", json(), line});
  cv_.notify_all();
}

void FakeApiServer::Expire(const std::string& resource, ExpiryMode mode) {
  std::lock_guard<std::mutex> l(mu_);
  Resource& res = Res(resource);
  // As if writes elsewhere moved on: every resourceVersion a client holds is
  // now too old, while a fresh list's is not.
  res.compacted = ++rv_;
  res.mode = mode;
  // kErrorEvent: open watches flush what they have, then get the ERROR
  // event. kHttp410: they break, and the resume is refused with 410. The
  // history stays for their cursors; `compacted` refuses resumes.
  for (Watch* w : watches_) {
    if (w->resource != resource) continue;
    (mode == ExpiryMode::kErrorEvent ? w->expire : w->disconnect) = true;
  }
  cv_.notify_all();
}

void FakeApiServer::DisconnectWatches(const std::string& resource) {
  std::lock_guard<std::mutex> l(mu_);
  for (Watch* w : watches_) {
    if (w->resource == resource) w->disconnect = true;
  }
  cv_.notify_all();
}

void FakeApiServer::EndWatches(const std::string& resource) {
  std::lock_guard<std::mutex> l(mu_);
  for (Watch* w : watches_) {
    if (w->resource == resource) w->end = true;
  }
  cv_.notify_all();
}

void FakeApiServer::SetStalled(bool stalled) {
  std::lock_guard<std::mutex> l(mu_);
  stalled_ = stalled;
  cv_.notify_all();
}

void FakeApiServer::ExpireNextContinue() {
  std::lock_guard<std::mutex> l(mu_);
  expire_next_continue_ = true;
}

void FakeApiServer::FailNext(const std::string& resource, int status, int count) {
  std::lock_guard<std::mutex> l(mu_);
  for (int i = 0; i < count; ++i) Res(resource).failures.push_back(status);
}

std::vector<FakeRequest> FakeApiServer::Requests() const {
  std::lock_guard<std::mutex> l(mu_);
  return requests_;
}

int FakeApiServer::OpenWatches(const std::string& resource) const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<int>(std::count_if(watches_.begin(), watches_.end(),
                                        [&](const Watch* w) { return w->resource == resource; }));
}

bool FakeApiServer::WaitForRequests(
    const std::function<bool(const std::vector<FakeRequest>&)>& pred,
    absl::Duration timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, absl::ToChronoMilliseconds(timeout), [&] { return pred(requests_); });
}

bool FakeApiServer::WaitForOpenWatches(const std::string& resource, int n,
                                       absl::Duration timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, absl::ToChronoMilliseconds(timeout), [&] {
    return std::count_if(watches_.begin(), watches_.end(),
                         [&](const Watch* w) { return w->resource == resource; }) == n;
  });
}

int64_t FakeApiServer::resource_version() const {
  std::lock_guard<std::mutex> l(mu_);
  return rv_;
}

}  // namespace kpx::testing

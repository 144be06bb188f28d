// kpx-podserver: the "pod" of the netns test lab. One single-threaded epoll
// loop serves a small HTTP/1.1 app (name, health, deterministic bytes, 500),
// a TCP echo port with half-close semantics and a counting/checksum sink.
//
//   kpx-podserver --name pod1 --listen 0.0.0.0:5000 --echo 0.0.0.0:5001
//                 --sink 0.0.0.0:5002 [--health-fail-file /run/x/unhealthy]
//
// HTTP: keep-alive by default (HTTP/1.1), pipelining answered in order, close
// after the response on "Connection: close" (or HTTP/1.0 without keep-alive).
//   GET /          200 "NAME\n"
//   GET /healthz   200 "ok\n", or 503 "unhealthy\n" while --health-fail-file exists
//   GET /bytes/N   200 with N bytes, byte i = (i*31+7) & 0xff, streamed
//   GET /fail      500
//   anything else  404 (other methods 405, malformed 400 + close)
// Echo: echoes bytes; after the client's EOF it sends what is left, then shuts
// its write side. Sink: reads to EOF, answers "<count> <fnv1a64 16 hex>\n".
// SIGTERM/SIGINT: exit 0.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "gflags/gflags.h"

DEFINE_string(name, "podserver", "Name answered by GET / (one line)");
DEFINE_string(listen, "", "HTTP listen addresses, IP:PORT[,IP:PORT...]");
DEFINE_string(echo, "", "TCP echo listen addresses, IP:PORT[,IP:PORT...]");
DEFINE_string(sink, "", "TCP sink (count + FNV-1a 64) listen addresses, IP:PORT[,...]");
DEFINE_string(health_fail_file, "", "While this file exists, /healthz answers 503");
DEFINE_int32(idle_timeout_s, 300, "Close connections without progress for this long");

namespace kpx::podserver {
namespace {

constexpr size_t kMaxHeader = 16 * 1024;     // larger request heads get 431
constexpr size_t kOutHighWater = 64 * 1024;  // stop parsing/reading above this
constexpr size_t kEchoHighWater = 1 << 20;   // echo stops reading above this
constexpr size_t kReadChunk = 64 * 1024;
constexpr int kMaxReadsPerEvent = 8;  // fairness between connections
constexpr int kMaxAcceptsPerEvent = 256;
constexpr int64_t kLingerMs = 2000;  // lingering close after our FIN
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
// The /bytes pattern repeats every 256 bytes, so one table serves any offset.
constexpr size_t kPatternChunk = 64 * 1024;

enum class Kind : uint8_t { kHttpListener, kEchoListener, kSinkListener, kHttp, kEcho, kSink };

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

// Byte queue with a moving start, so consuming a pipelined request is O(1).
class Buffer {
 public:
  size_t size() const { return data_.size() - begin_; }
  bool empty() const { return size() == 0; }
  absl::string_view view() const { return absl::string_view(data_).substr(begin_); }
  void Append(absl::string_view s) { data_.append(s.data(), s.size()); }
  void Consume(size_t n) {
    begin_ += std::min(n, size());
    if (begin_ == data_.size()) {
      data_.clear();
      begin_ = 0;
    } else if (begin_ >= 64 * 1024 && begin_ * 2 >= data_.size()) {
      data_.erase(0, begin_);
      begin_ = 0;
    }
  }
  void Clear() { Consume(size()); }

 private:
  std::string data_;
  size_t begin_ = 0;
};

struct Conn {
  int fd = -1;
  Kind kind = Kind::kHttp;
  uint32_t events = 0;  // interest currently registered with epoll
  int64_t last_progress_ms = 0;
  Buffer in;
  Buffer out;
  bool peer_eof = false;     // read returned 0
  bool close_after = false;  // HTTP: close once `out` (and the stream) drained
  bool wr_shut = false;      // we sent FIN; now discarding input until EOF
  uint64_t stream_pos = 0;   // /bytes/N in flight: next byte index
  uint64_t stream_left = 0;  //   and bytes still to send
  uint64_t body_left = 0;    // request body bytes to discard
  uint64_t sink_count = 0;
  uint64_t sink_hash = kFnvOffset;
};

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string text;
};

std::optional<Endpoint> ParseEndpoint(absl::string_view s) {
  Endpoint ep;
  ep.text = std::string(s);
  size_t colon = s.rfind(':');
  if (colon == absl::string_view::npos) return std::nullopt;
  std::string host(s.substr(0, colon));
  int port = 0;
  if (!absl::SimpleAtoi(s.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return std::nullopt;
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&ep.addr);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1) {
      return std::nullopt;
    }
    ep.len = sizeof(sockaddr_in6);
    return ep;
  }
  auto* a4 = reinterpret_cast<sockaddr_in*>(&ep.addr);
  a4->sin_family = AF_INET;
  a4->sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) return std::nullopt;
  ep.len = sizeof(sockaddr_in);
  return ep;
}

const char* StatusText(int code) {
  switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

class Server {
 public:
  explicit Server(std::string name, std::string health_fail_file, int64_t idle_ms)
      : name_(std::move(name)), health_fail_file_(std::move(health_fail_file)), idle_ms_(idle_ms) {
    pattern_.resize(kPatternChunk + 256);
    for (size_t i = 0; i < pattern_.size(); ++i) pattern_[i] = static_cast<char>((i * 31 + 7) & 0xff);
  }
  ~Server() {
    for (auto& c : conns_) {
      if (c) close(c->fd);
    }
    if (reserve_fd_ >= 0) close(reserve_fd_);
    if (signal_fd_ >= 0) close(signal_fd_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
  }

  bool Init() {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) return Fail("epoll_create1");
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return Fail("sigprocmask");
    signal_fd_ = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd_ < 0) return Fail("signalfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(signal_fd_);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, signal_fd_, &ev) != 0) return Fail("epoll_ctl signalfd");
    // Kept open so accept() can still drain the queue when out of descriptors.
    reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return true;
  }

  bool AddListener(const Endpoint& ep, Kind kind) {
    int fd = socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Fail("socket " + ep.text);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<const sockaddr*>(&ep.addr), ep.len) != 0) {
      close(fd);
      return Fail("bind " + ep.text);
    }
    if (listen(fd, 65535) != 0) {  // the kernel caps it at somaxconn
      close(fd);
      return Fail("listen " + ep.text);
    }
    Conn& c = Register(fd, kind);
    c.events = EPOLLIN;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(fd);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return Fail("epoll_ctl " + ep.text);
    return true;
  }

  // Returns the process exit code.
  int Run() {
    std::vector<epoll_event> events(1024);
    int64_t next_sweep = NowMs() + 1000;
    while (true) {
      int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), 1000);
      if (n < 0) {
        if (errno == EINTR) continue;
        perror("kpx-podserver: epoll_wait");
        return 1;
      }
      now_ms_ = NowMs();
      for (int i = 0; i < n; ++i) {
        int fd = static_cast<int>(events[i].data.u64);
        if (fd == signal_fd_) return 0;
        if (fd < 0 || static_cast<size_t>(fd) >= conns_.size() || !conns_[fd]) continue;
        Conn& c = *conns_[fd];
        switch (c.kind) {
          case Kind::kHttpListener: Accept(c.fd, Kind::kHttp); break;
          case Kind::kEchoListener: Accept(c.fd, Kind::kEcho); break;
          case Kind::kSinkListener: Accept(c.fd, Kind::kSink); break;
          default: Drive(c, events[i].events); break;
        }
      }
      if (now_ms_ >= next_sweep) {
        Sweep();
        next_sweep = now_ms_ + 1000;
      }
    }
  }

 private:
  static bool Fail(const std::string& what) {
    fprintf(stderr, "kpx-podserver: %s: %s\n", what.c_str(), strerror(errno));
    return false;
  }

  Conn& Register(int fd, Kind kind) {
    if (static_cast<size_t>(fd) >= conns_.size()) conns_.resize(fd + 1024);
    conns_[fd] = std::make_unique<Conn>();
    Conn& c = *conns_[fd];
    c.fd = fd;
    c.kind = kind;
    c.last_progress_ms = now_ms_;
    return c;
  }

  void Close(Conn& c) {
    int fd = c.fd;
    close(fd);  // also removes it from the epoll set
    conns_[fd].reset();
  }

  void Accept(int lfd, Kind kind) {
    for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
      int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if ((errno == EMFILE || errno == ENFILE) && reserve_fd_ >= 0) {
          // Accept and drop one connection so the listener does not spin.
          close(reserve_fd_);
          int drop = accept(lfd, nullptr, nullptr);
          if (drop >= 0) close(drop);
          reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
          continue;
        }
        return;  // EAGAIN, or a transient error on one pending connection
      }
      if (kind == Kind::kHttp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      }
      Conn& c = Register(fd, kind);
      c.events = EPOLLIN;
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = static_cast<uint64_t>(fd);
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) Close(c);
    }
  }

  // Reads what is available (bounded), routing bytes by connection kind.
  // Returns false on a fatal socket error.
  bool ReadSome(Conn& c) {
    static char buf[kReadChunk];
    for (int i = 0; i < kMaxReadsPerEvent && WantRead(c); ++i) {
      ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        if (errno == EINTR) continue;
        return false;
      }
      c.last_progress_ms = now_ms_;
      if (n == 0) {
        c.peer_eof = true;
        if (c.kind == Kind::kSink) {
          c.out.Append(absl::StrFormat("%d %016x\n", c.sink_count, c.sink_hash));
        }
        return true;
      }
      absl::string_view data(buf, static_cast<size_t>(n));
      if (c.wr_shut) continue;  // lingering close: discard
      switch (c.kind) {
        case Kind::kHttp: c.in.Append(data); break;
        case Kind::kEcho: c.out.Append(data); break;
        case Kind::kSink:
          c.sink_count += data.size();
          for (unsigned char ch : data) c.sink_hash = (c.sink_hash ^ ch) * kFnvPrime;
          break;
        default: break;
      }
      if (static_cast<size_t>(n) < sizeof(buf)) return true;  // drained for now
    }
    return true;
  }

  bool WantRead(const Conn& c) const {
    if (c.peer_eof) return false;
    if (c.wr_shut) return true;
    switch (c.kind) {
      case Kind::kHttp:
        return !c.close_after && c.stream_left == 0 && c.out.size() < kOutHighWater &&
               c.in.size() <= kMaxHeader;
      case Kind::kEcho: return c.out.size() < kEchoHighWater;
      case Kind::kSink: return true;
      default: return false;
    }
  }

  enum class FlushResult { kDrained, kBlocked, kError };

  FlushResult Flush(Conn& c) {
    while (true) {
      if (!c.out.empty()) {
        absl::string_view v = c.out.view();
        ssize_t n = send(c.fd, v.data(), v.size(), MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return FlushResult::kBlocked;
          if (errno == EINTR) continue;
          return FlushResult::kError;
        }
        c.out.Consume(static_cast<size_t>(n));
        c.last_progress_ms = now_ms_;
        continue;
      }
      if (c.stream_left > 0) {
        size_t off = static_cast<size_t>(c.stream_pos & 0xff);
        size_t len = static_cast<size_t>(std::min<uint64_t>(c.stream_left, kPatternChunk));
        ssize_t n = send(c.fd, pattern_.data() + off, len, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return FlushResult::kBlocked;
          if (errno == EINTR) continue;
          return FlushResult::kError;
        }
        c.stream_pos += static_cast<uint64_t>(n);
        c.stream_left -= static_cast<uint64_t>(n);
        c.last_progress_ms = now_ms_;
        continue;
      }
      return FlushResult::kDrained;
    }
  }

  void Drive(Conn& c, uint32_t ev) {
    if (ev & EPOLLERR) return Close(c);
    if ((ev & (EPOLLIN | EPOLLHUP)) && !ReadSome(c)) return Close(c);
    // Parse, write, and parse again while writing made room; bounded so one
    // pipelining client cannot starve the others.
    for (int round = 0; round < 16; ++round) {
      if (c.kind == Kind::kHttp) ParseHttp(c);
      FlushResult r = Flush(c);
      if (r == FlushResult::kError) return Close(c);
      if (r == FlushResult::kBlocked) break;
      if (c.kind != Kind::kHttp || c.close_after || c.wr_shut || !HasCompleteWork(c)) break;
    }
    bool drained = c.out.empty() && c.stream_left == 0;
    if (drained && !c.wr_shut) {
      bool finish = false;
      switch (c.kind) {
        case Kind::kHttp: finish = c.close_after || (c.peer_eof && !HasCompleteWork(c)); break;
        case Kind::kEcho:
        case Kind::kSink: finish = c.peer_eof; break;
        default: break;
      }
      if (finish) {
        if (c.peer_eof) return Close(c);  // nothing unread: close() is a clean FIN
        // Unread input at close() would turn into a RST that can destroy the
        // response in flight, so send FIN and discard input until EOF.
        shutdown(c.fd, SHUT_WR);
        c.wr_shut = true;
        c.in.Clear();
        c.last_progress_ms = now_ms_;
      }
    }
    if (c.wr_shut && c.peer_eof) return Close(c);
    // Requests left over after the fairness bound: ask for EPOLLOUT, which
    // fires at once on a writable socket, so they are not stranded.
    bool pending = c.kind == Kind::kHttp && !c.close_after && !c.wr_shut && HasCompleteWork(c);
    uint32_t want = (WantRead(c) ? EPOLLIN : 0u) | (drained && !pending ? 0u : EPOLLOUT);
    if (want == 0) {
      // Blocked on nothing we can wait for (e.g. HTTP EOF with a partial
      // request): nothing more will happen on this connection.
      return Close(c);
    }
    if (want != c.events) {
      epoll_event e{};
      e.events = want;
      e.data.u64 = static_cast<uint64_t>(c.fd);
      if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &e) != 0) return Close(c);
      c.events = want;
    }
  }

  // True when buffered input holds a whole request head (or body to discard).
  static bool HasCompleteWork(const Conn& c) {
    if (c.body_left > 0) return !c.in.empty();
    return c.in.view().find("\r\n\r\n") != absl::string_view::npos;
  }

  void ParseHttp(Conn& c) {
    for (int i = 0; i < 256; ++i) {
      if (c.close_after || c.wr_shut || c.stream_left > 0 || c.out.size() >= kOutHighWater) return;
      if (c.body_left > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(c.body_left, c.in.size()));
        c.in.Consume(n);
        c.body_left -= n;
        if (c.body_left > 0) return;
      }
      absl::string_view v = c.in.view();
      // RFC 9112 2.2: ignore empty lines before a request line.
      size_t skip = 0;
      while (skip + 1 < v.size() && v[skip] == '\r' && v[skip + 1] == '\n') skip += 2;
      if (skip > 0) {
        c.in.Consume(skip);
        v = c.in.view();
      }
      size_t end = v.find("\r\n\r\n");
      if (end == absl::string_view::npos) {
        if (v.size() > kMaxHeader) Respond(c, 431, "header too large\n", false, false);
        return;
      }
      if (end > kMaxHeader) return Respond(c, 431, "header too large\n", false, false);
      HandleRequest(c, v.substr(0, end));
      c.in.Consume(end + 4);
    }
  }

  void HandleRequest(Conn& c, absl::string_view head) {
    size_t eol = head.find("\r\n");
    absl::string_view line = head.substr(0, eol);
    absl::string_view fields = eol == absl::string_view::npos ? "" : head.substr(eol + 2);
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) {
      return Respond(c, 400, "bad request line\n", false, false);
    }
    absl::string_view method = parts[0], target = parts[1], version = parts[2];
    bool keep_alive;
    if (version == "HTTP/1.1") {
      keep_alive = true;
    } else if (version == "HTTP/1.0") {
      keep_alive = false;
    } else {
      return Respond(c, 400, "unsupported version\n", false, false);
    }
    uint64_t content_length = 0;
    for (absl::string_view f : absl::StrSplit(fields, "\r\n", absl::SkipEmpty())) {
      size_t colon = f.find(':');
      if (colon == absl::string_view::npos || colon == 0) {
        return Respond(c, 400, "bad header\n", false, false);
      }
      absl::string_view name = f.substr(0, colon);
      absl::string_view value = absl::StripAsciiWhitespace(f.substr(colon + 1));
      if (absl::EqualsIgnoreCase(name, "connection")) {
        for (absl::string_view tok : absl::StrSplit(value, ',')) {
          tok = absl::StripAsciiWhitespace(tok);
          if (absl::EqualsIgnoreCase(tok, "close")) keep_alive = false;
          if (absl::EqualsIgnoreCase(tok, "keep-alive")) keep_alive = true;
        }
      } else if (absl::EqualsIgnoreCase(name, "content-length")) {
        if (!absl::SimpleAtoi(value, &content_length)) {
          return Respond(c, 400, "bad content-length\n", false, false);
        }
      } else if (absl::EqualsIgnoreCase(name, "transfer-encoding")) {
        // Chunked request bodies are not needed by any test; refuse cleanly.
        return Respond(c, 501, "transfer-encoding not supported\n", false, false);
      }
    }
    c.body_left = content_length;
    bool head_only = method == "HEAD";
    if (method != "GET" && !head_only) return Respond(c, 405, "method not allowed\n", keep_alive, false);
    absl::string_view path = target.substr(0, target.find('?'));
    if (path == "/") return Respond(c, 200, absl::StrCat(name_, "\n"), keep_alive, head_only);
    if (path == "/healthz") {
      if (!health_fail_file_.empty() && access(health_fail_file_.c_str(), F_OK) == 0) {
        return Respond(c, 503, "unhealthy\n", keep_alive, head_only);
      }
      return Respond(c, 200, "ok\n", keep_alive, head_only);
    }
    if (path == "/fail") return Respond(c, 500, "fail\n", keep_alive, head_only);
    if (absl::ConsumePrefix(&path, "/bytes/")) {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(path, &n) || path.empty() || path[0] == '+' || path[0] == '-') {
        return Respond(c, 400, "bad byte count\n", keep_alive, head_only);
      }
      AppendHead(c, 200, n, keep_alive, "application/octet-stream");
      if (!head_only) {
        c.stream_pos = 0;
        c.stream_left = n;
      }
      return;
    }
    Respond(c, 404, "not found\n", keep_alive, head_only);
  }

  void AppendHead(Conn& c, int code, uint64_t length, bool keep_alive,
                  absl::string_view type = "text/plain") {
    c.out.Append(absl::StrFormat(
        "HTTP/1.1 %d %s\r\nServer: kpx-podserver\r\nX-Pod-Name: %s\r\n"
        "Content-Type: %s\r\nContent-Length: %d\r\n%s\r\n",
        code, StatusText(code), name_, type, length, keep_alive ? "" : "Connection: close\r\n"));
    if (!keep_alive) c.close_after = true;
  }

  void Respond(Conn& c, int code, absl::string_view body, bool keep_alive, bool head_only) {
    AppendHead(c, code, body.size(), keep_alive);
    if (!head_only) c.out.Append(body);
  }

  // Closes connections that made no progress for too long (a client that
  // stopped reading, or a half-dead lingering close).
  void Sweep() {
    for (auto& slot : conns_) {
      if (!slot) continue;
      Conn& c = *slot;
      if (c.kind == Kind::kHttpListener || c.kind == Kind::kEchoListener ||
          c.kind == Kind::kSinkListener) {
        continue;
      }
      int64_t limit = c.wr_shut ? kLingerMs : idle_ms_;
      if (now_ms_ - c.last_progress_ms > limit) Close(c);
    }
  }

  std::string name_;
  std::string health_fail_file_;
  int64_t idle_ms_;
  std::string pattern_;
  std::vector<std::unique_ptr<Conn>> conns_;  // indexed by fd
  int epoll_fd_ = -1;
  int signal_fd_ = -1;
  int reserve_fd_ = -1;
  int64_t now_ms_ = NowMs();
};

// Many concurrent benchmark connections: lift the descriptor limit to the hard cap.
void RaiseFdLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

bool AddAll(Server& server, const std::string& list, Kind kind, const char* flag) {
  for (absl::string_view s : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    std::optional<Endpoint> ep = ParseEndpoint(absl::StripAsciiWhitespace(s));
    if (!ep) {
      fprintf(stderr, "kpx-podserver: --%s: '%s' is not IP:PORT (e.g. 0.0.0.0:5000)\n", flag,
              std::string(s).c_str());
      return false;
    }
    if (!server.AddListener(*ep, kind)) return false;
  }
  return true;
}

}  // namespace
}  // namespace kpx::podserver

int main(int argc, char** argv) {
  using kpx::podserver::Kind;
  gflags::SetUsageMessage("kpx-podserver --name NAME --listen IP:PORT [--echo IP:PORT] [--sink IP:PORT]");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_listen.empty() && FLAGS_echo.empty() && FLAGS_sink.empty()) {
    fprintf(stderr, "kpx-podserver: nothing to serve: give --listen, --echo and/or --sink\n");
    return 2;
  }
  if (FLAGS_name.find_first_of("\r\n") != std::string::npos) {
    fprintf(stderr, "kpx-podserver: --name must be one line\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  kpx::podserver::RaiseFdLimit();
  kpx::podserver::Server server(FLAGS_name, FLAGS_health_fail_file,
                                int64_t{std::max(1, FLAGS_idle_timeout_s)} * 1000);
  if (!server.Init() ||
      !kpx::podserver::AddAll(server, FLAGS_listen, Kind::kHttpListener, "listen") ||
      !kpx::podserver::AddAll(server, FLAGS_echo, Kind::kEchoListener, "echo") ||
      !kpx::podserver::AddAll(server, FLAGS_sink, Kind::kSinkListener, "sink")) {
    return 1;
  }
  fprintf(stderr, "kpx-podserver %s: serving http=%s echo=%s sink=%s\n", FLAGS_name.c_str(),
          FLAGS_listen.c_str(), FLAGS_echo.c_str(), FLAGS_sink.c_str());
  return server.Run();
}

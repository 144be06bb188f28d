// Client and backend helpers for the io_uring proxy's end-to-end tests: a
// greeting+echo backend server, bounded connects and reads, and an echo
// transfer checked by checksum. Everything here has a deadline.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "controller/base/ipv4.h"

namespace kpx::uring::e2e {

inline Ipv4 Ip(const std::string& s) { return *Ipv4::Parse(s); }

// Polls `cond` every 5 ms until it holds or `timeout` passes.
inline bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

inline void SetTimeouts(int fd, absl::Duration d) {
  timeval tv = absl::ToTimeval(d);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

inline sockaddr_in Addr(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = Ip(ip).be();
  return a;
}

// A test backend: sends "<ip>\n" on accept, echoes until the client's FIN,
// then sends "eof <bytes echoed>\n" and closes. One thread per connection.
class BackendServer {
 public:
  BackendServer(const std::string& ip, uint16_t port) : name_(ip) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a = Addr(ip, port);
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && listen(fd_, 512) == 0;
    if (ok_) accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~BackendServer() {
    shutdown(fd_, SHUT_RDWR);  // wakes accept()
    if (accept_thread_.joinable()) accept_thread_.join();
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      for (int fd : open_) shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conn_threads_) t.join();
    close(fd_);
  }
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  int accepted() const { return accepted_.load(); }
  int resets() const { return resets_.load(); }

 private:
  void AcceptLoop() {
    for (int i = 0; i < 100000; ++i) {
      int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;  // listener shut down
      }
      accepted_++;
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        close(c);
        return;
      }
      open_.insert(c);
      conn_threads_.emplace_back([this, c] { Serve(c); });
    }
  }
  void Serve(int c) {
    SetTimeouts(c, absl::Seconds(30));  // no thread outlives a stuck test for long
    std::string hello = name_ + "\n";
    bool ok = send(c, hello.data(), hello.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(hello.size());
    std::vector<char> buf(256 * 1024);
    uint64_t echoed = 0;
    while (ok) {
      ssize_t n = recv(c, buf.data(), buf.size(), 0);
      if (n == 0) {
        std::string bye = absl::StrCat("eof ", echoed, "\n");
        send(c, bye.data(), bye.size(), MSG_NOSIGNAL);
        break;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) resets_++;
        break;
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = send(c, buf.data() + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) {
          if (w < 0 && errno == EINTR) continue;
          ok = false;
          break;
        }
        off += w;
      }
      echoed += static_cast<uint64_t>(n);
    }
    absl::MutexLock lock(&mu_);
    open_.erase(c);
    close(c);
  }

  std::string name_;
  int fd_ = -1;
  bool ok_ = false;
  std::thread accept_thread_;
  std::atomic<int> accepted_{0};
  std::atomic<int> resets_{0};
  absl::Mutex mu_;
  bool stopping_ = false;
  std::set<int> open_;
  std::vector<std::thread> conn_threads_;
};

// Connects with a deadline; returns the fd or -errno. `source` binds the
// client address (for affinity tests).
inline int Connect(const std::string& ip, uint16_t port, const std::string& source = "",
            absl::Duration timeout = absl::Seconds(3)) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (!source.empty()) {
    sockaddr_in s = Addr(source, 0);
    if (bind(fd, reinterpret_cast<sockaddr*>(&s), sizeof(s)) != 0) {
      int err = errno;
      close(fd);
      return -err;
    }
  }
  sockaddr_in a = Addr(ip, port);
  int rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  if (rc != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return -err;
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) {
      close(fd);
      return -ETIMEDOUT;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      close(fd);
      return -err;
    }
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  SetTimeouts(fd, absl::Seconds(5));
  return fd;
}

// Reads one '\n'-terminated line (without it); "" on EOF/error/timeout,
// with errno left as recv set it.
inline std::string ReadLine(int fd) {
  std::string line;
  char ch;
  for (int i = 0; i < 4096; ++i) {
    ssize_t n = recv(fd, &ch, 1, 0);
    if (n <= 0) return "";
    if (ch == '\n') return line;
    line.push_back(ch);
  }
  return line;
}

// Reads until EOF (or error); returns what came.
inline std::string ReadToEof(int fd, int* last_errno = nullptr) {
  std::string out;
  char buf[4096];
  for (int i = 0; i < 100000; ++i) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      if (last_errno != nullptr) *last_errno = n < 0 ? errno : 0;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

inline bool SendAll(int fd, const std::string& data) {
  return send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
}

// Connects through the proxy and returns which backend answered ("" if none).
inline std::string WhoAnswers(const std::string& ip, uint16_t port, const std::string& source = "") {
  int fd = Connect(ip, port, source);
  if (fd < 0) return "";
  std::string name = ReadLine(fd);
  close(fd);
  return name;
}

// Connects and expects the proxy to reset the connection within 2 s, before
// any byte: "" when it did, else what happened instead.
inline std::string ResetWithin2s(const std::string& ip, uint16_t port) {
  const absl::Time start = absl::Now();
  int fd = Connect(ip, port);
  // The proxy accepts, then resets: often before connect() even returns.
  if (fd == -ECONNRESET) return "";
  if (fd < 0) return absl::StrCat("connect: ", strerror(-fd));
  SetTimeouts(fd, absl::Seconds(2));
  char ch;
  ssize_t n = recv(fd, &ch, 1, 0);
  int err = errno;
  close(fd);
  if (n >= 0) return absl::StrCat("recv returned ", n);
  if (err != ECONNRESET) return absl::StrCat("recv: ", strerror(err));
  if (absl::Now() - start > absl::Seconds(2)) return "reset came late";
  return "";
}

// Sends `total` bytes of a known pattern on `fd` (through the proxy to an
// echo backend `name`) while reading everything back; checks the greeting,
// the echo by checksum, and the backend's "eof <total>" after our FIN.
// Returns "" when all of it was right.
inline std::string EchoTransfer(int fd, const std::string& name, uint64_t total) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  const std::string hello = name + "\n";
  const std::string bye = absl::StrCat("eof ", total, "\n");
  auto byte_at = [](uint64_t i) { return static_cast<char>((i * 2654435761u) >> 13); };
  auto fnv = [](uint64_t h, char c) { return (h ^ static_cast<uint8_t>(c)) * 1099511628211ull; };
  uint64_t sent = 0, received = 0, sent_hash = 14695981039346656037ull, recv_hash = sent_hash;
  std::string head, tail;
  std::vector<char> out(64 * 1024), in(256 * 1024);
  bool fin_sent = false, eof = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (!eof && absl::Now() < deadline) {
    pollfd p{fd, static_cast<short>(POLLIN | (fin_sent ? 0 : POLLOUT)), 0};
    if (poll(&p, 1, 1000) <= 0) continue;
    if ((p.revents & POLLOUT) && !fin_sent) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), total - sent));
      for (size_t i = 0; i < n; ++i) out[i] = byte_at(sent + i);
      ssize_t w = send(fd, out.data(), n, MSG_NOSIGNAL);
      if (w > 0) {
        for (ssize_t i = 0; i < w; ++i) sent_hash = fnv(sent_hash, out[i]);
        sent += static_cast<uint64_t>(w);
        if (sent == total) {
          shutdown(fd, SHUT_WR);
          fin_sent = true;
        }
      } else if (w < 0 && errno != EAGAIN) {
        return absl::StrCat("send: ", strerror(errno));
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = recv(fd, in.data(), in.size(), 0);
      if (r == 0) {
        eof = true;
      } else if (r < 0 && errno != EAGAIN) {
        return absl::StrCat("recv: ", strerror(errno));
      }
      for (ssize_t i = 0; i < r; ++i, ++received) {
        if (received < hello.size()) {
          head.push_back(in[i]);
        } else if (received < hello.size() + total) {
          recv_hash = fnv(recv_hash, in[i]);
        } else {
          tail.push_back(in[i]);
        }
      }
    }
  }
  if (!eof) return absl::StrCat("timed out after ", sent, " sent, ", received, " received");
  if (sent != total) return absl::StrCat("sent ", sent);
  if (head != hello) return "greeting was " + head;
  if (received != hello.size() + total + bye.size()) return absl::StrCat("received ", received);
  if (recv_hash != sent_hash) return "echo differs from what was sent";
  if (tail != bye) return "backend said " + tail;
  return "";
}

}  // namespace kpx::uring::e2e

// Test packets for the BPF fixtures: a small builder for Ethernet/IPv4/TCP
// (and the UDP/ICMP/ARP/IPv6 frames that must pass untouched), always with
// valid checksums, and a parser that checks checksums by full recomputation.
#pragma once

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kpx::bpftest {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;

inline constexpr Mac kClientMac = {0x02, 0xc1, 0, 0, 0, 0x01};
inline constexpr Mac kNodeMac = {0x02, 0x0d, 0, 0, 0, 0x02};

// TCP flag bits (byte 13 of the header).
inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;

// Network-order IPv4 address from dotted text; aborts the test binary on a
// typo (these are literals in the test).
inline uint32_t Ip(const char* text) {
  in_addr a{};
  if (inet_pton(AF_INET, text, &a) != 1) __builtin_trap();
  return a.s_addr;
}

inline std::string IpText(uint32_t be) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{be};
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

struct TcpSpec {
  uint32_t saddr = 0;  // network order
  uint32_t daddr = 0;
  uint16_t sport = 0;  // host order
  uint16_t dport = 0;
  uint8_t flags = kSyn;
  uint32_t seq = 1000;  // host order
  uint32_t ack = 0;
  uint16_t window = 64240;
  uint8_t ttl = 64;
  uint8_t tos = 0;
  uint16_t ip_id = 0x1234;
  uint16_t frag_off = 0x4000;    // DF; host order flags+offset
  std::optional<uint16_t> vlan;  // 802.1Q TCI
  Bytes ip_options;              // multiple of 4 bytes
  Bytes tcp_options;             // multiple of 4 bytes
  Bytes payload;
  Mac smac = kClientMac;
  Mac dmac = kNodeMac;
};

inline void Put16(Bytes& b, size_t off, uint16_t host) {
  b[off] = host >> 8;
  b[off + 1] = host & 0xff;
}
inline void Put32(Bytes& b, size_t off, uint32_t host) {
  Put16(b, off, host >> 16);
  Put16(b, off + 2, host & 0xffff);
}
inline uint16_t Get16(const Bytes& b, size_t off) { return (b[off] << 8) | b[off + 1]; }
inline uint32_t Get32(const Bytes& b, size_t off) {
  return (uint32_t{Get16(b, off)} << 16) | Get16(b, off + 2);
}
inline uint32_t GetBe32(const Bytes& b, size_t off) {  // raw, network order
  uint32_t v;
  __builtin_memcpy(&v, &b[off], 4);
  return v;
}
inline void PutBe32(Bytes& b, size_t off, uint32_t be) { __builtin_memcpy(&b[off], &be, 4); }

// One's complement sum of big-endian 16-bit words (odd tail padded with 0).
inline uint32_t SumWords(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  return sum;
}
inline uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// Ethernet header (+ optional VLAN tag); returns the L3 offset.
inline size_t PutEth(Bytes& b, const Mac& dmac, const Mac& smac, uint16_t ethertype,
                     std::optional<uint16_t> vlan) {
  b.insert(b.end(), dmac.begin(), dmac.end());
  b.insert(b.end(), smac.begin(), smac.end());
  if (vlan) {
    b.resize(b.size() + 4);
    Put16(b, 12, 0x8100);
    Put16(b, 14, *vlan);
  }
  size_t off = b.size();
  b.resize(off + 2);
  Put16(b, off, ethertype);
  return b.size();
}

// IPv4 header at l3 with a fresh checksum; the L4 part follows.
inline void PutIpv4(Bytes& b, size_t l3, uint8_t proto, uint32_t saddr, uint32_t daddr,
                    size_t l4_len, uint8_t ttl, uint8_t tos, uint16_t id, uint16_t frag_off,
                    const Bytes& options) {
  size_t ihl = 20 + options.size();
  b.resize(l3 + ihl);
  b[l3] = 0x40 | (ihl / 4);
  b[l3 + 1] = tos;
  Put16(b, l3 + 2, ihl + l4_len);
  Put16(b, l3 + 4, id);
  Put16(b, l3 + 6, frag_off);
  b[l3 + 8] = ttl;
  b[l3 + 9] = proto;
  PutBe32(b, l3 + 12, saddr);
  PutBe32(b, l3 + 16, daddr);
  std::copy(options.begin(), options.end(), b.begin() + l3 + 20);
  Put16(b, l3 + 10, Fold(SumWords(&b[l3], ihl)));
}

inline uint16_t L4Checksum(const Bytes& b, size_t l3, size_t l4, size_t l4_len, uint8_t proto) {
  uint32_t sum = SumWords(&b[l3 + 12], 8);  // saddr, daddr
  sum += proto + static_cast<uint32_t>(l4_len);
  return Fold(SumWords(&b[l4], l4_len, sum));
}

inline Bytes BuildTcp(const TcpSpec& s) {
  Bytes b;
  size_t l3 = PutEth(b, s.dmac, s.smac, 0x0800, s.vlan);
  size_t thl = 20 + s.tcp_options.size();
  size_t l4_len = thl + s.payload.size();
  PutIpv4(b, l3, 6, s.saddr, s.daddr, l4_len, s.ttl, s.tos, s.ip_id, s.frag_off, s.ip_options);
  size_t l4 = b.size();
  b.resize(l4 + l4_len);
  Put16(b, l4, s.sport);
  Put16(b, l4 + 2, s.dport);
  Put32(b, l4 + 4, s.seq);
  Put32(b, l4 + 8, s.ack);
  b[l4 + 12] = (thl / 4) << 4;
  b[l4 + 13] = s.flags;
  Put16(b, l4 + 14, s.window);
  std::copy(s.tcp_options.begin(), s.tcp_options.end(), b.begin() + l4 + 20);
  std::copy(s.payload.begin(), s.payload.end(), b.begin() + l4 + thl);
  Put16(b, l4 + 16, L4Checksum(b, l3, l4, l4_len, 6));
  return b;
}

inline Bytes BuildUdp(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport,
                      size_t payload_len) {
  Bytes b;
  size_t l3 = PutEth(b, kNodeMac, kClientMac, 0x0800, std::nullopt);
  size_t l4_len = 8 + payload_len;
  PutIpv4(b, l3, 17, saddr, daddr, l4_len, 64, 0, 1, 0, {});
  size_t l4 = b.size();
  b.resize(l4 + l4_len, 0xab);
  Put16(b, l4, sport);
  Put16(b, l4 + 2, dport);
  Put16(b, l4 + 4, l4_len);
  Put16(b, l4 + 6, 0);
  Put16(b, l4 + 6, L4Checksum(b, l3, l4, l4_len, 17));
  return b;
}

inline Bytes BuildIcmpEcho(uint32_t saddr, uint32_t daddr) {
  Bytes b;
  size_t l3 = PutEth(b, kNodeMac, kClientMac, 0x0800, std::nullopt);
  PutIpv4(b, l3, 1, saddr, daddr, 16, 64, 0, 2, 0, {});
  size_t l4 = b.size();
  b.resize(l4 + 16, 0x5a);
  b[l4] = 8;  // echo request
  b[l4 + 1] = 0;
  Put16(b, l4 + 2, 0);
  Put16(b, l4 + 2, Fold(SumWords(&b[l4], 16)));
  return b;
}

inline Bytes BuildArpRequest(uint32_t sender, uint32_t target) {
  Bytes b;
  PutEth(b, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, kClientMac, 0x0806, std::nullopt);
  size_t o = b.size();
  b.resize(o + 28);
  Put16(b, o, 1);
  Put16(b, o + 2, 0x0800);
  b[o + 4] = 6;
  b[o + 5] = 4;
  Put16(b, o + 6, 1);
  std::copy(kClientMac.begin(), kClientMac.end(), b.begin() + o + 8);
  PutBe32(b, o + 14, sender);
  PutBe32(b, o + 24, target);
  return b;
}

// IPv6 + TCP SYN to port dport (checksum not needed: nothing may touch it).
inline Bytes BuildIpv6Tcp(uint16_t dport) {
  Bytes b;
  PutEth(b, kNodeMac, kClientMac, 0x86dd, std::nullopt);
  size_t o = b.size();
  b.resize(o + 40 + 20);
  b[o] = 0x60;
  Put16(b, o + 4, 20);
  b[o + 6] = 6;
  b[o + 7] = 64;
  b[o + 23] = 1;  // ::1 style addresses
  b[o + 39] = 2;
  Put16(b, o + 40, 40000);
  Put16(b, o + 42, dport);
  b[o + 40 + 12] = 5 << 4;
  b[o + 40 + 13] = kSyn;
  return b;
}

// What a test needs to know about an IPv4/TCP frame that came out of a
// program, with both checksums recomputed from scratch.
struct TcpView {
  bool ok = false;  // parsed as Ethernet/IPv4/TCP
  Mac dmac{}, smac{};
  size_t l3 = 0, ihl = 0, l4 = 0, thl = 0;
  uint16_t tot_len = 0, frag_off = 0;
  uint8_t ttl = 0;
  uint32_t saddr = 0, daddr = 0;  // network order
  uint16_t sport = 0, dport = 0;  // host order
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  bool ip_csum_ok = false, tcp_csum_ok = false;
  size_t frame_len = 0;
};

inline TcpView ParseTcp(const Bytes& b) {
  TcpView v;
  v.frame_len = b.size();
  if (b.size() < 14) return v;
  std::copy(b.begin(), b.begin() + 6, v.dmac.begin());
  std::copy(b.begin() + 6, b.begin() + 12, v.smac.begin());
  size_t l3 = 14;
  uint16_t type = Get16(b, 12);
  if (type == 0x8100) {
    if (b.size() < 18) return v;
    type = Get16(b, 16);
    l3 = 18;
  }
  if (type != 0x0800 || b.size() < l3 + 20) return v;
  v.l3 = l3;
  v.ihl = (b[l3] & 0xf) * 4;
  v.tot_len = Get16(b, l3 + 2);
  v.frag_off = Get16(b, l3 + 6);
  v.ttl = b[l3 + 8];
  if (b[l3 + 9] != 6 || v.ihl < 20 || b.size() < l3 + v.tot_len || v.tot_len < v.ihl + 20) return v;
  v.saddr = GetBe32(b, l3 + 12);
  v.daddr = GetBe32(b, l3 + 16);
  v.ip_csum_ok = Fold(SumWords(&b[l3], v.ihl)) == 0;
  v.l4 = l3 + v.ihl;
  size_t l4_len = v.tot_len - v.ihl;
  v.sport = Get16(b, v.l4);
  v.dport = Get16(b, v.l4 + 2);
  v.seq = Get32(b, v.l4 + 4);
  v.ack = Get32(b, v.l4 + 8);
  v.thl = (b[v.l4 + 12] >> 4) * 4;
  v.flags = b[v.l4 + 13];
  v.window = Get16(b, v.l4 + 14);
  v.tcp_csum_ok = L4Checksum(b, l3, v.l4, l4_len, 6) == 0;
  v.ok = true;
  return v;
}

}  // namespace kpx::bpftest

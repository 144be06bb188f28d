// FrontendKey <-> kpx_svc_key and friends. Ports and addresses are network
// byte order in every ABI struct (the BPF programs compare them to headers).
#include "dataplane/xdp/abi_convert.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/str_cat.h"

namespace kpx::xdp {

uint8_t IpProto(controller::Protocol protocol) {
  switch (protocol) {
    case controller::Protocol::kTCP:
      return IPPROTO_TCP;
    case controller::Protocol::kUDP:
      return IPPROTO_UDP;
    case controller::Protocol::kSCTP:
      return IPPROTO_SCTP;
  }
  return 0;
}

kpx_svc_key SvcKey(const controller::FrontendKey& frontend) {
  kpx_svc_key key{};
  key.addr = frontend.ip.be();
  key.port = htons(frontend.port);
  key.proto = IpProto(frontend.protocol);
  return key;
}

std::optional<controller::FrontendKey> FrontendFromSvcKey(const kpx_svc_key& key) {
  controller::FrontendKey f;
  f.ip = Ipv4::FromBe(key.addr);
  f.port = ntohs(key.port);
  switch (key.proto) {
    case IPPROTO_TCP:
      f.protocol = controller::Protocol::kTCP;
      break;
    case IPPROTO_UDP:
      f.protocol = controller::Protocol::kUDP;
      break;
    case IPPROTO_SCTP:
      f.protocol = controller::Protocol::kSCTP;
      break;
    default:
      return std::nullopt;
  }
  return f;
}

kpx_backend BackendValue(Ipv4 ip, uint16_t port) {
  kpx_backend b{};
  b.addr = ip.be();
  b.port = htons(port);
  return b;
}

std::string SvcKeyString(const kpx_svc_key& key) {
  return absl::StrCat(Ipv4::FromBe(key.addr).ToString(), ":", ntohs(key.port), "/", key.proto);
}

std::string BackendString(const kpx_backend& value) {
  return absl::StrCat(Ipv4::FromBe(value.addr).ToString(), ":", ntohs(value.port));
}

}  // namespace kpx::xdp

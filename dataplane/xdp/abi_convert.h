// Conversions between controller types (FrontendKey, Backend addresses) and
// the ABI structs of bpf/include/kpx/abi.h, plus printable forms for errors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "controller/service_table.h"
#include "kpx/abi.h"

namespace kpx::xdp {

// IPPROTO_* of a protocol.
uint8_t IpProto(controller::Protocol protocol);

kpx_svc_key SvcKey(const controller::FrontendKey& frontend);
// nullopt for a protocol kpx does not know (a corrupt or foreign entry).
std::optional<controller::FrontendKey> FrontendFromSvcKey(const kpx_svc_key& key);

kpx_backend BackendValue(Ipv4 ip, uint16_t port);

// One 64-bit value per ip:port (the hash key of address-indexed tables).
inline uint64_t AddrKey(Ipv4 ip, uint16_t port) {
  return (static_cast<uint64_t>(ip.be()) << 16) | port;
}
inline Ipv4 AddrKeyIp(uint64_t key) { return Ipv4::FromBe(static_cast<uint32_t>(key >> 16)); }
inline uint16_t AddrKeyPort(uint64_t key) { return static_cast<uint16_t>(key & 0xffff); }

std::string SvcKeyString(const kpx_svc_key& key);  // "10.96.0.1:80/6"
std::string BackendString(const kpx_backend& value);  // "10.0.0.1:8080"

}  // namespace kpx::xdp

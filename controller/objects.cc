// Small helpers of the object model (names for enums, source references).
#include "controller/objects.h"

#include "absl/strings/str_cat.h"

namespace kpx::controller {

std::string SourceRef::String() const {
  if (line > 0) return absl::StrCat(file, ":", line);
  return absl::StrCat(file, " (document ", document + 1, ")");
}

const char* ProtocolName(Protocol p) {
  switch (p) {
    case Protocol::kTCP: return "TCP";
    case Protocol::kUDP: return "UDP";
    case Protocol::kSCTP: return "SCTP";
  }
  return "?";
}

const char* ServiceTypeName(ServiceType t) {
  switch (t) {
    case ServiceType::kClusterIP: return "ClusterIP";
    case ServiceType::kNodePort: return "NodePort";
    case ServiceType::kLoadBalancer: return "LoadBalancer";
    case ServiceType::kExternalName: return "ExternalName";
  }
  return "?";
}

}  // namespace kpx::controller

// String forms of the rule types, as printed by kpxctl and logs.
#include "controller/service_table.h"

#include "absl/strings/str_cat.h"

namespace kpx::controller {

std::string ServicePortName::String() const {
  if (port.empty()) return service.String();
  return absl::StrCat(service.String(), ":", port);
}

const char* FrontendTypeName(FrontendType t) {
  switch (t) {
    case FrontendType::kClusterIP: return "ClusterIP";
    case FrontendType::kNodePort: return "NodePort";
    case FrontendType::kExternalIP: return "ExternalIP";
    case FrontendType::kLoadBalancer: return "LoadBalancer";
  }
  return "?";
}

std::string FrontendKey::String() const {
  return absl::StrCat(ip.IsUnspecified() ? std::string("*") : ip.ToString(), ":", port, "/",
                      ProtocolName(protocol));
}

}  // namespace kpx::controller

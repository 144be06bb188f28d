// Helpers shared by the unit, bpf and e2e tests.
#include "tests/testlib/testlib.h"

#include <unistd.h>

#ifndef KPX_SOURCE_DIR
#define KPX_SOURCE_DIR "."
#endif
#ifndef KPX_BINARY_DIR
#define KPX_BINARY_DIR "."
#endif

namespace kpx::testing {

std::string MissingRootReason() {
  if (geteuid() != 0) return "needs root (CAP_SYS_ADMIN/CAP_NET_ADMIN/CAP_BPF)";
  if (access("/sys/fs/bpf", F_OK) != 0) return "needs bpffs at /sys/fs/bpf";
  return "";
}

std::string SourcePath(const std::string& relative) {
  return std::string(KPX_SOURCE_DIR) + "/" + relative;
}

std::string BinaryPath(const std::string& relative) {
  return std::string(KPX_BINARY_DIR) + "/" + relative;
}

}  // namespace kpx::testing

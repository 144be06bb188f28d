// Shared Prober helpers.
#include "dataplane/health/prober.h"

#include <cerrno>

namespace kpx::health {

bool IsLocalProbeError(int err) {
  switch (err) {
    case EMFILE:         // out of descriptors
    case ENFILE:
    case ENOBUFS:        // out of socket memory
    case ENOMEM:
    case EADDRNOTAVAIL:  // out of ephemeral ports
    case EAGAIN:
    case EINTR:
      return true;
    default:
      return false;
  }
}

}  // namespace kpx::health

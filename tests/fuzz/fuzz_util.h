// Shared by the libFuzzer targets: quiet logging (glog to stderr at every
// rejected input would cost more than the input) and a check that aborts, so
// a broken invariant is a crash libFuzzer saves a reproducer for.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "glog/logging.h"

namespace kpx::fuzz {

inline void QuietLogs() {
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = 3;  // FATAL only
  google::InitGoogleLogging("kpx_fuzz");
}

}  // namespace kpx::fuzz

#define KPX_FUZZ_CHECK(cond, what)                                          \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__,      \
                   __LINE__, what);                                         \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

// Shared test helpers: privilege checks that turn into GTest skips with a
// one-line reason, paths to the source tree and the built binaries.
#pragma once

#include <string>

namespace kpx::testing {

// "" when the process may create network namespaces and load BPF programs,
// otherwise the reason it may not (for GTEST_SKIP()).
std::string MissingRootReason();

// Absolute path of a file in the source tree / build tree.
std::string SourcePath(const std::string& relative);
std::string BinaryPath(const std::string& relative);

}  // namespace kpx::testing

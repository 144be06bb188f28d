// Strict UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing
// past U+10FFFF). Manifests must be UTF-8 (YAML 1.2, Kubernetes' JSON), and
// every name we hand on ends up in JSON (kpxctl, the admin API, the status
// file), which nlohmann::json refuses to serialise otherwise.
#pragma once

#include <cstddef>

#include "absl/strings/string_view.h"

namespace kpx {

// Length of the longest valid UTF-8 prefix of `s`: s.size() when all valid.
size_t Utf8ValidPrefix(absl::string_view s);

inline bool IsValidUtf8(absl::string_view s) { return Utf8ValidPrefix(s) == s.size(); }

}  // namespace kpx

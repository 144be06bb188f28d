// Early-return helpers for absl::Status / absl::StatusOr at fallible boundaries.
// Hot paths (per packet, per CQE) use errno values instead; see STYLE.md.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KPX_STATUS_CONCAT_INNER_(a, b) a##b
#define KPX_STATUS_CONCAT_(a, b) KPX_STATUS_CONCAT_INNER_(a, b)

#define KPX_RETURN_IF_ERROR(expr)                  \
  do {                                             \
    ::absl::Status kpx_status_ = (expr);           \
    if (!kpx_status_.ok()) return kpx_status_;     \
  } while (0)

#define KPX_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()

#define KPX_ASSIGN_OR_RETURN(lhs, expr) \
  KPX_ASSIGN_OR_RETURN_IMPL_(KPX_STATUS_CONCAT_(kpx_statusor_, __LINE__), lhs, expr)

// HealthSpec parsing (flags, annotations) and BuildTargets: the pure part of
// health checking, which carries most of its tests.
#include "dataplane/health/health_spec.h"

#include <algorithm>
#include <cctype>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kpx::health {
namespace {

constexpr std::string_view kHealthPrefix = "kpx.io/health";

std::string Fmt(absl::Duration d) { return absl::FormatDuration(d); }

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string Trimmed(std::string_view s) {
  return std::string(absl::StripAsciiWhitespace(Absl(s)));
}

// nullopt-like via Status: the error text is the part after "annotation k=v: ".
absl::StatusOr<CheckType> ParseCheckType(std::string_view text) {
  std::string v = absl::AsciiStrToLower(Trimmed(text));
  if (v == "tcp") return CheckType::kTcp;
  if (v == "http") return CheckType::kHttp;
  if (v == "none") return CheckType::kNone;
  return absl::InvalidArgumentError("must be one of tcp, http, none");
}

absl::StatusOr<absl::Duration> ParseBoundedDuration(std::string_view text, absl::Duration min,
                                                    absl::Duration max) {
  absl::StatusOr<absl::Duration> d = ParseHealthDuration(text);
  if (!d.ok()) return d.status();
  if (*d < min || *d > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("must be between ", Fmt(min), " and ", Fmt(max)));
  }
  return d;
}

absl::StatusOr<int> ParseCount(std::string_view text) {
  int v = 0;
  if (!absl::SimpleAtoi(Absl(Trimmed(text)), &v) || v < 1 || v > kMaxRiseFall) {
    return absl::InvalidArgumentError(absl::StrCat("must be an integer from 1 to ", kMaxRiseFall));
  }
  return v;
}

absl::StatusOr<uint16_t> ParsePort(std::string_view text) {
  int v = 0;
  if (!absl::SimpleAtoi(Absl(Trimmed(text)), &v) || v < 1 || v > 65535) {
    return absl::InvalidArgumentError("must be a port number from 1 to 65535");
  }
  return static_cast<uint16_t>(v);
}

// The path goes verbatim into the request line: anything that could end the
// line or the request (spaces, CR, LF, other control bytes) is refused.
absl::StatusOr<std::string> ParsePath(std::string_view text) {
  std::string p(text);
  if (p.empty() || p[0] != '/') return absl::InvalidArgumentError("must start with '/'");
  if (p.size() > kMaxPathLength) {
    return absl::InvalidArgumentError(absl::StrCat("must be at most ", kMaxPathLength, " bytes"));
  }
  for (unsigned char c : p) {
    if (c <= ' ' || c == 0x7f) {
      return absl::InvalidArgumentError("must not contain spaces or control characters");
    }
  }
  return p;
}

std::string Quote(std::string_view v) {
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < ' ' || c == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

auto SpecKey(const HealthSpec& s) {
  // Smaller is stricter, field by field; kNone sorts last.
  const int type_rank = s.type == CheckType::kNone ? 2 : (s.type == CheckType::kHttp ? 0 : 1);
  return std::tuple(type_rank == 2, s.interval, s.timeout, s.fall, s.rise, s.suspect_interval,
                    s.down_backoff, s.down_backoff_max, s.jitter, type_rank, s.port, s.path);
}

}  // namespace

const char* CheckTypeName(CheckType t) {
  switch (t) {
    case CheckType::kNone: return "none";
    case CheckType::kTcp: return "tcp";
    case CheckType::kHttp: return "http";
  }
  return "?";
}

std::string HealthSpec::String() const {
  std::string s = CheckTypeName(type);
  if (type == CheckType::kHttp) absl::StrAppend(&s, " path=", path);
  if (port != 0) absl::StrAppend(&s, " port=", port);
  absl::StrAppend(&s, " interval=", Fmt(interval), " timeout=", Fmt(timeout),
                  " rise=", rise, " fall=", fall);
  return s;
}

bool StricterThan(const HealthSpec& a, const HealthSpec& b) { return SpecKey(a) < SpecKey(b); }

absl::StatusOr<absl::Duration> ParseHealthDuration(std::string_view text) {
  std::string t = Trimmed(text);
  if (!t.empty() && t != "0" && std::all_of(t.begin(), t.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return absl::InvalidArgumentError("needs a unit, e.g. \"500ms\" or \"2s\"");
  }
  absl::Duration d;
  if (t.empty() || !absl::ParseDuration(t, &d) || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError("not a duration (e.g. \"500ms\", \"2s\")");
  }
  if (d < absl::ZeroDuration()) return absl::InvalidArgumentError("must not be negative");
  return d;
}

absl::StatusOr<HealthSpec> HealthSpecFromFlags(const HealthFlags& f) {
  HealthSpec s;
  auto bad = [](std::string_view flag, std::string_view value, const absl::Status& st) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", Absl(flag), "=", Quote(value), ": ", st.message()));
  };
  auto type = ParseCheckType(f.check);
  if (!type.ok()) return bad("health_check", f.check, type.status());
  s.type = *type;
  auto path = ParsePath(f.path);
  if (!path.ok()) return bad("health_path", f.path, path.status());
  s.path = *path;
  struct DurationFlag {
    const char* name;
    const std::string* value;
    absl::Duration* out;
    absl::Duration min, max;
  };
  const DurationFlag durations[] = {
      {"health_interval", &f.interval, &s.interval, kMinInterval, kMaxInterval},
      {"health_timeout", &f.timeout, &s.timeout, kMinTimeout, kMaxTimeout},
      {"health_suspect_interval", &f.suspect_interval, &s.suspect_interval, kMinInterval,
       kMaxInterval},
      {"health_down_backoff", &f.down_backoff, &s.down_backoff, kMinInterval, kMaxInterval},
      {"health_down_backoff_max", &f.down_backoff_max, &s.down_backoff_max, kMinInterval,
       kMaxInterval},
  };
  for (const DurationFlag& d : durations) {
    auto v = ParseBoundedDuration(*d.value, d.min, d.max);
    if (!v.ok()) return bad(d.name, *d.value, v.status());
    *d.out = *v;
  }
  if (s.down_backoff_max < s.down_backoff) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--health_down_backoff_max=", f.down_backoff_max, " is below --health_down_backoff=",
        f.down_backoff));
  }
  if (f.rise < 1 || f.rise > kMaxRiseFall) {
    return absl::InvalidArgumentError(
        absl::StrCat("--health_rise=", f.rise, ": must be an integer from 1 to ", kMaxRiseFall));
  }
  if (f.fall < 1 || f.fall > kMaxRiseFall) {
    return absl::InvalidArgumentError(
        absl::StrCat("--health_fall=", f.fall, ": must be an integer from 1 to ", kMaxRiseFall));
  }
  s.rise = f.rise;
  s.fall = f.fall;
  if (!(f.jitter >= 0 && f.jitter <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--health_jitter=", f.jitter, ": must be between 0 and 0.5"));
  }
  s.jitter = f.jitter;
  return s;
}

ParsedHealthSpec ParseHealthAnnotations(const absl::btree_map<std::string, std::string>& annotations,
                                        const HealthSpec& defaults, std::string_view service) {
  ParsedHealthSpec out;
  out.spec = defaults;
  const absl::string_view svc = Absl(service);
  auto error = [&](std::string_view key, std::string_view value, const absl::Status& st,
                   std::string_view default_text) {
    out.errors.push_back(absl::StrCat("Service ", svc, ": annotation ", Absl(key), "=",
                                      Quote(value), ": ", st.message(), "; using the default ",
                                      Absl(default_text)));
  };
  // Apply in a fixed order (btree_map is sorted, but the keys are independent).
  for (const auto& [key, value] : annotations) {
    if (!absl::StartsWith(Absl(key), Absl(kHealthPrefix))) continue;
    if (key == kAnnotationCheck) {
      auto v = ParseCheckType(value);
      if (v.ok()) out.spec.type = *v;
      else error(key, value, v.status(), CheckTypeName(defaults.type));
    } else if (key == kAnnotationPath) {
      auto v = ParsePath(value);
      if (v.ok()) out.spec.path = *v;
      else error(key, value, v.status(), Quote(defaults.path));
    } else if (key == kAnnotationInterval) {
      auto v = ParseBoundedDuration(value, kMinInterval, kMaxInterval);
      if (v.ok()) out.spec.interval = *v;
      else error(key, value, v.status(), Fmt(defaults.interval));
    } else if (key == kAnnotationTimeout) {
      auto v = ParseBoundedDuration(value, kMinTimeout, kMaxTimeout);
      if (v.ok()) out.spec.timeout = *v;
      else error(key, value, v.status(), Fmt(defaults.timeout));
    } else if (key == kAnnotationRise) {
      auto v = ParseCount(value);
      if (v.ok()) out.spec.rise = *v;
      else error(key, value, v.status(), absl::StrCat(defaults.rise));
    } else if (key == kAnnotationFall) {
      auto v = ParseCount(value);
      if (v.ok()) out.spec.fall = *v;
      else error(key, value, v.status(), absl::StrCat(defaults.fall));
    } else if (key == kAnnotationPort) {
      auto v = ParsePort(value);
      if (v.ok()) out.spec.port = *v;
      else error(key, value, v.status(), "(the backend's port)");
    } else {
      out.errors.push_back(absl::StrCat(
          "Service ", svc, ": unknown annotation ", key, " (known: ",
          absl::StrJoin({kAnnotationCheck, kAnnotationPath, kAnnotationInterval, kAnnotationTimeout,
                         kAnnotationRise, kAnnotationFall, kAnnotationPort},
                        ", "),
          "); ignored"));
    }
  }
  if (out.spec.type != CheckType::kHttp && annotations.contains(kAnnotationPath)) {
    out.errors.push_back(absl::StrCat("Service ", svc, ": annotation ", kAnnotationPath,
                                      " has no effect with ", kAnnotationCheck, "=",
                                      CheckTypeName(out.spec.type), " (set it to http)"));
  }
  return out;
}

HealthTargets BuildTargets(const controller::ServiceTable& table, const HealthSpec& defaults) {
  HealthTargets out;
  // Rules of one Service (one per frontend) share its annotations: parse once.
  absl::flat_hash_map<controller::NamespacedName, HealthSpec> specs;
  struct Pick {
    HealthSpec spec;
    std::string service;
  };
  absl::btree_map<std::tuple<uint32_t, uint16_t>, std::pair<controller::BackendAddr, Pick>> picks;
  for (const auto& [key, rule] : table) {
    auto it = specs.find(rule.service.service);
    if (it == specs.end()) {
      const std::string name = rule.service.service.String();
      ParsedHealthSpec parsed = ParseHealthAnnotations(rule.annotations, defaults, name);
      for (std::string& e : parsed.errors) out.errors.push_back(std::move(e));
      it = specs.emplace(rule.service.service, std::move(parsed.spec)).first;
    }
    const HealthSpec& spec = it->second;
    if (spec.type == CheckType::kNone) continue;
    if (rule.frontend.protocol != controller::Protocol::kTCP && spec.port == 0) continue;
    for (const controller::Backend& b : rule.backends) {
      if (!b.ready || b.port == 0) continue;
      controller::BackendAddr addr{b.ip, b.port};
      auto [pos, inserted] = picks.try_emplace(std::tuple(b.ip.host(), b.port), addr,
                                               Pick{spec, rule.service.service.String()});
      if (inserted) continue;
      Pick& cur = pos->second.second;
      const std::string name = rule.service.service.String();
      // Stricter spec wins; equal specs: the smaller Service name, for
      // output that does not depend on table order.
      if (StricterThan(spec, cur.spec) || (spec == cur.spec && name < cur.service)) {
        cur = Pick{spec, name};
      }
    }
  }
  out.targets.reserve(picks.size());
  for (auto& [k, v] : picks) {
    out.targets.push_back(HealthTarget{v.first, std::move(v.second.spec), std::move(v.second.service)});
  }
  return out;
}

}  // namespace kpx::health

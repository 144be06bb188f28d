// JSON and text renderings of translated rules.
#include "controller/table_format.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace kpx::controller {
std::vector<const ServiceRule*> DisplayOrder(const ServiceTable& table) {
  std::vector<const ServiceRule*> rules;
  rules.reserve(table.size());
  for (const auto& [key, rule] : table) rules.push_back(&rule);
  SortForDisplay(&rules);
  return rules;
}

void SortForDisplay(std::vector<const ServiceRule*>* rules) {
  std::sort(rules->begin(), rules->end(), [](const ServiceRule* a, const ServiceRule* b) {
    return std::tuple(a->service, a->type, a->frontend) <
           std::tuple(b->service, b->type, b->frontend);
  });
}

namespace {

std::string FrontendIp(const FrontendKey& key) {
  return key.ip.IsUnspecified() ? "*" : key.ip.ToString();
}

}  // namespace

nlohmann::ordered_json RuleToJson(const ServiceRule& rule) {
  nlohmann::ordered_json backends = nlohmann::ordered_json::array();
  for (const Backend& b : rule.backends) {
    backends.push_back({{"ip", b.ip.ToString()},
                        {"port", b.port},
                        {"node", b.node},
                        {"ready", b.ready},
                        {"serving", b.serving},
                        {"terminating", b.terminating}});
    if (!b.zone.empty()) backends.back()["zone"] = b.zone;
  }
  return {{"service", rule.service.String()},
          {"frontend",
           {{"type", FrontendTypeName(rule.type)},
            {"ip", FrontendIp(rule.frontend)},
            {"port", rule.frontend.port},
            {"protocol", ProtocolName(rule.frontend.protocol)}}},
          {"affinity_timeout_s", rule.affinity_timeout_s},
          {"local_only", rule.local_only},
          {"supported", rule.supported},
          {"backends", std::move(backends)}};
}

nlohmann::ordered_json TableToJson(const TranslateResult& result) {
  nlohmann::ordered_json services = nlohmann::ordered_json::array();
  for (const ServiceRule* rule : DisplayOrder(result.table)) services.push_back(RuleToJson(*rule));
  nlohmann::ordered_json skipped = nlohmann::ordered_json::array();
  for (const auto& [name, reason] : result.skipped) {
    skipped.push_back({{"service", name.String()}, {"reason", SkipReasonName(reason)}});
  }
  return {{"services", std::move(services)}, {"skipped", std::move(skipped)}};
}

std::string TableToText(const TranslateResult& result) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"SERVICE", "TYPE", "FRONTEND", "POLICY", "AFFINITY", "BACKENDS"});
  for (const ServiceRule* rule : DisplayOrder(result.table)) {
    std::vector<std::string> backends;
    for (const Backend& b : rule->backends) {
      std::string s = absl::StrCat(b.ip.ToString(), ":", b.port);
      if (b.terminating) absl::StrAppend(&s, "(terminating)");
      backends.push_back(std::move(s));
    }
    std::string backend_col = backends.empty() ? "<none: connections rejected>"
                                               : absl::StrJoin(backends, ",");
    if (!rule->supported) backend_col = absl::StrCat("<", ProtocolName(rule->frontend.protocol),
                                                     " not supported yet> ", backend_col);
    rows.push_back({rule->service.String(), FrontendTypeName(rule->type),
                    absl::StrCat(FrontendIp(rule->frontend), ":", rule->frontend.port, "/",
                                 ProtocolName(rule->frontend.protocol)),
                    rule->local_only ? "Local" : "Cluster",
                    rule->affinity_timeout_s ? absl::StrCat("ClientIP/", rule->affinity_timeout_s, "s")
                                             : "None",
                    std::move(backend_col)});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&out, row[i]);
      if (i + 1 < row.size()) out.append(widths[i] - row[i].size() + 3, ' ');
    }
    out.push_back('\n');
  }
  for (const auto& [name, reason] : result.skipped) {
    absl::StrAppend(&out, "# skipped ", name.String(), ": ", SkipReasonName(reason), "\n");
  }
  return out;
}

}  // namespace kpx::controller

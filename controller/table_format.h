// Printing a ServiceTable for people and programs: the JSON shape of
// `kpxctl render -o json` (also served by the admin API) and a kubectl-style
// table.
#pragma once

#include <string>
#include <vector>

#include "controller/translate.h"
#include "nlohmann/json_fwd.hpp"

namespace kpx::controller {

// {"services": [{"service", "frontend": {type, ip, port, protocol},
//   "affinity_timeout_s", "local_only", "supported", "backends": [...]}],
//  "skipped": [{"service", "reason"}]}
// Entries are ordered by service, port name, frontend type, then address.
nlohmann::ordered_json TableToJson(const TranslateResult& result);
nlohmann::ordered_json RuleToJson(const ServiceRule& rule);

// The rules ordered for display: service, port name, frontend type, address.
std::vector<const ServiceRule*> DisplayOrder(const ServiceTable& table);
// Sorts a selection of rules into the same order.
void SortForDisplay(std::vector<const ServiceRule*>* rules);

// One row per frontend: SERVICE TYPE FRONTEND POLICY AFFINITY BACKENDS.
std::string TableToText(const TranslateResult& result);

}  // namespace kpx::controller

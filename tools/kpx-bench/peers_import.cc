// The peer lab's results.jsonl -> e2e Measurements (repetitions averaged).
#include "tools/kpx-bench/peers_import.h"

#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"

namespace kpx::bench {
namespace {

struct Acc {
  std::vector<double> values;
  std::string unit;
  bool higher_is_better = false;
};

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}

double Num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

}  // namespace

absl::StatusOr<PeersImport> ImportPeersResults(const std::filesystem::path& results_jsonl,
                                               const std::string& project_subject, Report* report) {
  std::ifstream in(results_jsonl);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", results_jsonl.string()));
  PeersImport out;
  // (subject, case, metric) -> values over repetitions, in first-seen order.
  std::vector<std::tuple<std::string, std::string, std::string>> order;
  std::map<std::tuple<std::string, std::string, std::string>, Acc> acc;
  auto add = [&](const std::string& subject, const std::string& name, const std::string& metric, double v,
                 const char* unit, bool higher) {
    auto key = std::make_tuple(subject, name, metric);
    auto [it, fresh] = acc.try_emplace(key);
    if (fresh) order.push_back(key);
    it->second.values.push_back(v);
    it->second.unit = unit;
    it->second.higher_is_better = higher;
  };
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("mode") || !j.contains("test")) {
      return absl::InvalidArgumentError(
          absl::StrCat(results_jsonl.string(), ":", n, ": not a peers.sh result (JSON with mode and test)"));
    }
    ++out.lines;
    std::string mode = j["mode"].get<std::string>();
    std::string test = j["test"].get<std::string>();
    std::string subject = mode == "project" ? project_subject : mode;
    if (j.contains("error")) {
      out.errors.push_back(absl::StrCat(subject, " ", test, ": ", j["error"].dump()));
      continue;
    }
    if (test == "newconn" || test == "keepalive") {
      std::string name = test == "newconn" ? "new-connections" : "keep-alive";
      add(subject, name, "req_per_s", Num(j, "rps"), "req/s", true);
      add(subject, name, "p50_ms", Num(j, "lat_p50_us") / 1e3, "ms", false);
      add(subject, name, "p99_ms", Num(j, "lat_p99_us") / 1e3, "ms", false);
      double errors = 0;
      for (const char* k : {"err_connect", "err_read", "err_write", "err_status", "err_timeout"}) {
        errors += Num(j, k);
      }
      add(subject, name, "errors", errors, "count", false);
    } else if (test == "iperf") {
      add(subject, "bulk", "gbps", Num(j, "gbps"), "Gbit/s", true);
    }
  }
  for (const auto& key : order) {
    const auto& [subject, name, metric] = key;
    const Acc& a = acc[key];
    report->Add({.suite = "e2e", .name = name, .subject = subject, .metric = metric, .value = Mean(a.values),
                 .unit = a.unit, .higher_is_better = a.higher_is_better,
                 .extra = {{"reps", a.values}, {"source", results_jsonl.string()}}});
    ++out.measurements;
  }
  return out;
}

}  // namespace kpx::bench

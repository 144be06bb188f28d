// kpx-bench's output: every measurement becomes one JSON line (with the
// machine, kernel and versions), a markdown table with ratios to a peer, and
// gnuplot PNG charts. Subcommands only call Add() and declare tables/charts.
#pragma once

#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace kpx::bench {

// One number. `subject` is who was measured (kpx-xdp, kpx-uring, iptables,
// haproxy, xdp-pass, random, maglev, ...); `params` are the knobs of the case
// (S=1000, path=conntrack-hit, ...), which together with suite/name/metric
// identify what is compared across subjects.
struct Measurement {
  std::string suite;   // the subcommand: xdp, control, e2e, lb, health
  std::string name;    // the case within it
  std::string subject;
  std::string metric;  // e.g. ns_per_pkt, req_per_s, p99_ms
  double value = 0;
  std::string unit;
  bool higher_is_better = false;
  std::map<std::string, std::string> params;
  nlohmann::json extra = nlohmann::json::object();  // free-form detail (samples, counts)
};

// A markdown table: one row per (name, params) found for `metric` in
// `suite`, one column per subject in `subjects` (in that order), and, when
// `baseline` is set, a "x baseline" ratio column for every other subject.
// Ratios are oriented so that > 1 always means better than the baseline.
struct TableSpec {
  std::string title;
  std::string suite;
  std::string metric;
  std::vector<std::string> subjects;
  std::string baseline;  // empty: no ratio columns
  std::string note;      // printed under the table
};

// A gnuplot chart: `x_param` on the x axis (numeric params, e.g. S) or, when
// empty, one cluster per case name (bar chart); one series per subject.
struct ChartSpec {
  std::string file;  // PNG name inside the output directory
  std::string title;
  std::string suite;
  std::string metric;
  std::vector<std::string> subjects;
  std::string x_param;  // empty: histogram by case
  bool log_x = false;
  bool log_y = false;
  std::string y_label;
};

class Report {
 public:
  // Writes into `dir` (created): results.jsonl, summary.md, *.png.
  explicit Report(std::filesystem::path dir);
  ~Report();
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;

  absl::Status Open();
  const std::filesystem::path& dir() const { return dir_; }

  // Records and immediately appends (and flushes) the JSON line, so an
  // interrupted run keeps what it measured.
  void Add(Measurement m);
  const std::vector<Measurement>& measurements() const { return all_; }

  void AddTable(TableSpec spec) { tables_.push_back(std::move(spec)); }
  void AddChart(ChartSpec spec) { charts_.push_back(std::move(spec)); }
  // Free text (method notes, skipped peers and why) placed in summary.md.
  void AddNote(std::string note) { notes_.push_back(std::move(note)); }

  // Renders the tables (also returned, for printing) into summary.md.
  std::string RenderMarkdown() const;
  absl::Status WriteSummary() const;
  // Draws every chart with gnuplot; a missing gnuplot is an error naming the
  // package, the data files (*.dat) are written either way.
  absl::Status DrawCharts() const;

  // The JSON object written for `m` (env + fields): the schema smoke tests check.
  nlohmann::json ToJson(const Measurement& m) const;

 private:
  std::optional<double> Find(const std::string& suite, const std::string& name,
                             const std::map<std::string, std::string>& params,
                             const std::string& subject, const std::string& metric) const;

  std::filesystem::path dir_;
  std::FILE* jsonl_ = nullptr;
  nlohmann::json env_;
  std::vector<Measurement> all_;
  std::vector<TableSpec> tables_;
  std::vector<ChartSpec> charts_;
  std::vector<std::string> notes_;
};

// Machine, kernel, CPU model, core count, compiler and library versions,
// git commit: attached to every JSON line.
nlohmann::json CollectEnv();

// Percentile (0..100) of `samples` by nearest rank; 0 for an empty set.
double Percentile(std::vector<double> samples, double pct);

}  // namespace kpx::bench

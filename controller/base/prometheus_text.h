// Prometheus text exposition format (version 0.0.4) without a client library:
// metric families with HELP/TYPE, label escaping, and a fixed-bucket
// histogram. kpxd builds one MetricsText per scrape from its own counters.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kpx {

using PromLabels = std::vector<std::pair<std::string, std::string>>;

// Label values escape backslash, double quote and newline; HELP text escapes
// backslash and newline (the format's rules).
std::string PromEscapeLabelValue(std::string_view v);
std::string PromEscapeHelp(std::string_view v);
// Integers print without exponent; +Inf, -Inf, NaN as the format spells them.
std::string PromFormatValue(double v);
// [a-zA-Z_:][a-zA-Z0-9_:]* for metric names, no ':' for label names.
bool PromValidMetricName(std::string_view name);
bool PromValidLabelName(std::string_view name);

// kube-proxy's bucket helpers (prometheus.ExponentialBuckets / LinearBuckets).
std::vector<double> PromExponentialBuckets(double start, double factor, int count);
std::vector<double> PromLinearBuckets(double start, double width, int count);

// Cumulative histogram over fixed upper bounds (+Inf is implicit). Not
// thread-safe: kpxd observes and scrapes on its reconcile loop.
class PromHistogram {
 public:
  explicit PromHistogram(std::vector<double> upper_bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count per bound; the last element counts v > every bound.
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

class MetricsText {
 public:
  enum class Type { kCounter, kGauge, kHistogram };

  // Starts a family; samples added until the next Family() belong to it.
  // A family appears once: a second Family() with the same name is ignored
  // and its samples go to the first one.
  void Family(std::string name, std::string help, Type type);
  // A sample of the current family (counter/gauge).
  void Add(const PromLabels& labels, double value);
  // The current family's histogram series for `labels` (_bucket, _sum, _count).
  void AddHistogram(const PromLabels& labels, const PromHistogram& h);

  std::string Render() const;

 private:
  struct Sample {
    std::string suffix;  // "", "_bucket", "_sum", "_count"
    PromLabels labels;
    double value = 0;
  };
  struct Fam {
    std::string name, help;
    Type type;
    std::vector<Sample> samples;
  };
  std::vector<Fam> families_;
  size_t current_ = 0;
};

}  // namespace kpx

// Prometheus text exposition: escaping, number formatting, rendering.
#include "controller/base/prometheus_text.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "glog/logging.h"

namespace kpx {

std::string PromEscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string PromEscapeHelp(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string PromFormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Exact integers (counters) print as such up to 2^53, where doubles stop
  // being exact anyway.
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    return buf;
  }
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  // Shortest form that reads back the same value.
  for (int prec = 1; prec < 17; ++prec) {
    char shorter[40];
    std::snprintf(shorter, sizeof(shorter), "%.*g", prec, v);
    if (std::strtod(shorter, nullptr) == v) return shorter;
  }
  return buf;
}

namespace {
bool ValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}
}  // namespace

bool PromValidMetricName(std::string_view name) { return ValidName(name, true); }
bool PromValidLabelName(std::string_view name) {
  return ValidName(name, false) && name.substr(0, 2) != "__";
}

std::vector<double> PromExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i, start *= factor) b.push_back(start);
  return b;
}

std::vector<double> PromLinearBuckets(double start, double width, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start + width * i);
  return b;
}

PromHistogram::PromHistogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void PromHistogram::Observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void MetricsText::Family(std::string name, std::string help, Type type) {
  DCHECK(PromValidMetricName(name)) << name;
  for (size_t i = 0; i < families_.size(); ++i) {
    if (families_[i].name == name) {
      current_ = i;
      return;
    }
  }
  families_.push_back({std::move(name), std::move(help), type, {}});
  current_ = families_.size() - 1;
}

void MetricsText::Add(const PromLabels& labels, double value) {
  CHECK(!families_.empty()) << "MetricsText::Add before Family";
  families_[current_].samples.push_back({"", labels, value});
}

void MetricsText::AddHistogram(const PromLabels& labels, const PromHistogram& h) {
  CHECK(!families_.empty()) << "MetricsText::AddHistogram before Family";
  Fam& f = families_[current_];
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= h.bounds().size(); ++i) {
    cumulative += h.counts()[i];
    PromLabels l = labels;
    l.emplace_back("le", i < h.bounds().size() ? PromFormatValue(h.bounds()[i]) : "+Inf");
    f.samples.push_back({"_bucket", std::move(l), static_cast<double>(cumulative)});
  }
  f.samples.push_back({"_sum", labels, h.sum()});
  f.samples.push_back({"_count", labels, static_cast<double>(h.count())});
}

std::string MetricsText::Render() const {
  std::string out;
  for (const Fam& f : families_) {
    out += "# HELP " + f.name + " " + PromEscapeHelp(f.help) + "\n";
    out += "# TYPE " + f.name + " " +
           (f.type == Type::kCounter ? "counter" : f.type == Type::kGauge ? "gauge" : "histogram") +
           "\n";
    for (const Sample& s : f.samples) {
      out += f.name + s.suffix;
      if (!s.labels.empty()) {
        out += '{';
        for (size_t i = 0; i < s.labels.size(); ++i) {
          DCHECK(PromValidLabelName(s.labels[i].first)) << s.labels[i].first;
          if (i > 0) out += ',';
          out += s.labels[i].first + "=\"" + PromEscapeLabelValue(s.labels[i].second) + '"';
        }
        out += '}';
      }
      out += ' ' + PromFormatValue(s.value) + '\n';
    }
  }
  return out;
}

}  // namespace kpx

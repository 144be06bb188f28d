// Report: JSON lines, markdown tables with peer ratios, gnuplot charts.
#include "tools/kpx-bench/report.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kpx::bench {
namespace {

std::string ParamsKey(const std::map<std::string, std::string>& params) {
  std::vector<std::string> parts;
  for (const auto& [k, v] : params) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, " ");
}

std::string RowLabel(const std::string& name, const std::map<std::string, std::string>& params) {
  std::string key = ParamsKey(params);
  return key.empty() ? name : absl::StrCat(name, " (", key, ")");
}

// Three significant digits, without exponent for the usual magnitudes.
std::string FormatValue(double v) {
  double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1000) return absl::StrFormat("%.0f", v);
  if (a >= 100) return absl::StrFormat("%.1f", v);
  if (a >= 10) return absl::StrFormat("%.2f", v);
  if (a >= 0.01) return absl::StrFormat("%.3f", v);
  return absl::StrFormat("%.3g", v);
}

std::string FirstLine(const std::string& cmd) {
  std::string out;
  if (std::FILE* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    if (std::fgets(buf, sizeof buf, p)) out = buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string ReadCpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

std::string SafeFileStem(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  }
  return s;
}

std::string GnuplotQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

nlohmann::json CollectEnv() {
  nlohmann::json env;
  utsname u{};
  if (uname(&u) == 0) {
    env["hostname"] = u.nodename;
    env["kernel"] = u.release;
    env["arch"] = u.machine;
  }
  env["cpus"] = sysconf(_SC_NPROCESSORS_ONLN);
  env["cpu_model"] = ReadCpuModel();
  env["kpx_version"] = KPX_VERSION;
  env["git_commit"] = FirstLine("git -C '" KPX_SOURCE_DIR "' rev-parse --short HEAD 2>/dev/null");
  env["compiler"] = __VERSION__;
  env["libbpf"] = FirstLine("pkg-config --modversion libbpf 2>/dev/null");
  env["liburing"] = FirstLine("pkg-config --modversion liburing 2>/dev/null");
  return env;
}

double Percentile(std::vector<double> samples, double pct) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  double rank = std::ceil(pct / 100.0 * static_cast<double>(samples.size()));
  size_t idx = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return samples[std::min(idx, samples.size() - 1)];
}

Report::Report(std::filesystem::path dir) : dir_(std::move(dir)) {}

Report::~Report() {
  if (jsonl_ != nullptr) std::fclose(jsonl_);
}

absl::Status Report::Open() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("kpx-bench: creating ", dir_.string(), ": ", ec.message()));
  std::filesystem::path file = dir_ / "results.jsonl";
  jsonl_ = std::fopen(file.c_str(), "a");
  if (jsonl_ == nullptr) {
    return absl::InternalError(absl::StrCat("kpx-bench: opening ", file.string(), ": ", std::strerror(errno)));
  }
  env_ = CollectEnv();
  env_["run_started"] = absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  return absl::OkStatus();
}

nlohmann::json Report::ToJson(const Measurement& m) const {
  nlohmann::json j;
  j["suite"] = m.suite;
  j["name"] = m.name;
  j["subject"] = m.subject;
  j["metric"] = m.metric;
  j["value"] = m.value;
  j["unit"] = m.unit;
  j["higher_is_better"] = m.higher_is_better;
  j["params"] = m.params;
  if (!m.extra.empty()) j["extra"] = m.extra;
  j["env"] = env_;
  j["time"] = absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
  return j;
}

void Report::Add(Measurement m) {
  if (jsonl_ != nullptr) {
    std::string line = ToJson(m).dump() + "\n";
    std::fwrite(line.data(), 1, line.size(), jsonl_);
    std::fflush(jsonl_);
  }
  std::fprintf(stderr, "  %-8s %-28s %-14s %-16s %s %s\n", m.suite.c_str(),
               RowLabel(m.name, m.params).c_str(), m.subject.c_str(), m.metric.c_str(),
               FormatValue(m.value).c_str(), m.unit.c_str());
  all_.push_back(std::move(m));
}

std::optional<double> Report::Find(const std::string& suite, const std::string& name,
                                   const std::map<std::string, std::string>& params,
                                   const std::string& subject, const std::string& metric) const {
  // The last measurement wins (a repeated case supersedes an earlier one).
  std::optional<double> found;
  for (const Measurement& m : all_) {
    if (m.suite == suite && m.name == name && m.params == params && m.subject == subject &&
        m.metric == metric) {
      found = m.value;
    }
  }
  return found;
}

std::string Report::RenderMarkdown() const {
  std::ostringstream out;
  out << "# kpx-bench results\n\n";
  out << "Machine: " << env_.value("cpu_model", "?") << ", " << env_.value("cpus", 0)
      << " CPUs, kernel " << env_.value("kernel", "?") << "; kpx " << env_.value("kpx_version", "?")
      << " (" << env_.value("git_commit", "?") << "), started " << env_.value("run_started", "?")
      << ".\n\n";
  for (const TableSpec& t : tables_) {
    // Rows in first-seen order; unit and orientation from the first hit.
    std::vector<std::pair<std::string, std::map<std::string, std::string>>> rows;
    std::set<std::string> seen;
    std::string unit;
    bool higher = false;
    for (const Measurement& m : all_) {
      if (m.suite != t.suite || m.metric != t.metric) continue;
      if (std::find(t.subjects.begin(), t.subjects.end(), m.subject) == t.subjects.end()) continue;
      unit = m.unit;
      higher = m.higher_is_better;
      std::string key = m.name + "\x1f" + ParamsKey(m.params);
      if (seen.insert(key).second) rows.emplace_back(m.name, m.params);
    }
    if (rows.empty()) continue;
    out << "## " << t.title << "\n\n";
    out << "| case |";
    for (const auto& s : t.subjects) out << " " << s << " (" << unit << ") |";
    for (const auto& s : t.subjects) {
      if (!t.baseline.empty() && s != t.baseline) out << " " << s << " / " << t.baseline << " |";
    }
    out << "\n|---|";
    for (size_t i = 0; i < t.subjects.size(); ++i) out << "---:|";
    for (const auto& s : t.subjects) {
      if (!t.baseline.empty() && s != t.baseline) out << "---:|";
    }
    out << "\n";
    for (const auto& [name, params] : rows) {
      out << "| " << RowLabel(name, params) << " |";
      for (const auto& s : t.subjects) {
        auto v = Find(t.suite, name, params, s, t.metric);
        out << " " << (v ? FormatValue(*v) : "-") << " |";
      }
      if (!t.baseline.empty()) {
        auto b = Find(t.suite, name, params, t.baseline, t.metric);
        for (const auto& s : t.subjects) {
          if (s == t.baseline) continue;
          auto v = Find(t.suite, name, params, s, t.metric);
          if (!v || !b || *v == 0 || *b == 0) {
            out << " - |";
          } else {
            double ratio = higher ? *v / *b : *b / *v;
            out << " " << absl::StrFormat("%.2fx", ratio) << " |";
          }
        }
      }
      out << "\n";
    }
    if (!t.baseline.empty()) {
      out << "\nRatios: > 1 means better than " << t.baseline << " ("
          << (higher ? "higher" : "lower") << " " << t.metric << " is better).\n";
    }
    if (!t.note.empty()) out << "\n" << t.note << "\n";
    out << "\n";
  }
  for (const ChartSpec& c : charts_) {
    if (std::filesystem::exists(dir_ / c.file)) out << "![" << c.title << "](" << c.file << ")\n\n";
  }
  if (!notes_.empty()) {
    out << "## Notes\n\n";
    for (const auto& n : notes_) out << "- " << n << "\n";
    out << "\n";
  }
  return out.str();
}

absl::Status Report::WriteSummary() const {
  std::filesystem::path file = dir_ / "summary.md";
  std::ofstream out(file);
  out << RenderMarkdown();
  if (!out) return absl::InternalError(absl::StrCat("kpx-bench: writing ", file.string()));
  return absl::OkStatus();
}

absl::Status Report::DrawCharts() const {
  std::vector<std::string> failures;
  for (const ChartSpec& c : charts_) {
    std::string stem = SafeFileStem(std::filesystem::path(c.file).stem().string());
    std::ostringstream gp;
    gp << "set terminal png size 960,560 noenhanced\n"
       << "set output " << GnuplotQuote((dir_ / c.file).string()) << "\n"
       << "set title " << GnuplotQuote(c.title) << "\n"
       << "set ylabel " << GnuplotQuote(c.y_label) << "\n"
       << "set grid ytics\nset key outside right top\nset datafile missing '?'\n";
    if (c.log_y) gp << "set logscale y\n";
    bool any = false;
    if (!c.x_param.empty()) {
      if (c.log_x) gp << "set logscale x\n";
      gp << "set xlabel " << GnuplotQuote(c.x_param) << "\n";
      std::vector<std::string> plots;
      for (const auto& s : c.subjects) {
        std::vector<std::pair<double, double>> pts;
        for (const Measurement& m : all_) {
          if (m.suite != c.suite || m.metric != c.metric || m.subject != s) continue;
          auto it = m.params.find(c.x_param);
          if (it == m.params.end()) continue;
          pts.emplace_back(std::strtod(it->second.c_str(), nullptr), m.value);
        }
        if (pts.empty()) continue;
        std::sort(pts.begin(), pts.end());
        std::filesystem::path dat = dir_ / absl::StrCat(stem, "-", SafeFileStem(s), ".dat");
        std::ofstream d(dat);
        for (auto [x, y] : pts) d << x << " " << y << "\n";
        plots.push_back(absl::StrCat(GnuplotQuote(dat.string()), " using 1:2 with linespoints title ",
                                     GnuplotQuote(s)));
      }
      if (!plots.empty()) {
        gp << "plot " << absl::StrJoin(plots, ", ") << "\n";
        any = true;
      }
    } else {
      std::vector<std::pair<std::string, std::map<std::string, std::string>>> rows;
      std::set<std::string> seen;
      for (const Measurement& m : all_) {
        if (m.suite != c.suite || m.metric != c.metric) continue;
        if (std::find(c.subjects.begin(), c.subjects.end(), m.subject) == c.subjects.end()) continue;
        if (seen.insert(m.name + "\x1f" + ParamsKey(m.params)).second) rows.emplace_back(m.name, m.params);
      }
      if (!rows.empty()) {
        std::filesystem::path dat = dir_ / absl::StrCat(stem, ".dat");
        std::ofstream d(dat);
        for (const auto& [name, params] : rows) {
          d << GnuplotQuote(RowLabel(name, params));
          for (const auto& s : c.subjects) {
            auto v = Find(c.suite, name, params, s, c.metric);
            d << " " << (v ? absl::StrCat(*v) : "?");
          }
          d << "\n";
        }
        gp << "set style data histograms\nset style histogram clustered gap 1\n"
           << "set style fill solid 0.8 border -1\nset boxwidth 0.9\nset xtics rotate by -30\n"
           << "set yrange [0:*]\n";
        std::vector<std::string> plots;
        for (size_t i = 0; i < c.subjects.size(); ++i) {
          plots.push_back(absl::StrCat(i == 0 ? GnuplotQuote(dat.string()) : "''", " using ", i + 2,
                                       i == 0 ? ":xtic(1)" : "", " title ", GnuplotQuote(c.subjects[i])));
        }
        gp << "plot " << absl::StrJoin(plots, ", ") << "\n";
        any = true;
      }
    }
    if (!any) continue;  // nothing measured for this chart in this run
    std::filesystem::path script = dir_ / absl::StrCat(stem, ".gp");
    {
      std::ofstream s(script);
      s << gp.str();
    }
    std::string cmd = absl::StrCat("gnuplot ", GnuplotQuote(script.string()), " 2>>",
                                   GnuplotQuote((dir_ / "gnuplot.log").string()));
    int rc = std::system(cmd.c_str());
    if (rc != 0) failures.push_back(absl::StrCat(c.file, " (gnuplot exit ", rc, ", see gnuplot.log)"));
  }
  if (!failures.empty()) {
    return absl::InternalError(absl::StrCat(
        "kpx-bench: charts not drawn: ", absl::StrJoin(failures, "; "),
        " (is gnuplot installed? apt-get install gnuplot-nox)"));
  }
  return absl::OkStatus();
}

}  // namespace kpx::bench

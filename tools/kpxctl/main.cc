// kpxctl: the operator CLI. `render` works offline on manifests; the live
// commands (get, endpoints, drain, trace...) talk to kpxd's admin API.
#include <algorithm>
#include <fstream>
#include <map>
#include <cstdio>
#include <functional>
#include <sstream>
#include <iostream>
#include <string>
#include <vector>

#include <httplib.h>
#include <sys/socket.h>

#include "CLI/CLI.hpp"
#include "absl/strings/str_split.h"
#include "controller/manifest_loader.h"
#include "controller/table_format.h"
#include "controller/translate.h"
#include "nlohmann/json.hpp"

namespace {

struct RenderArgs {
  std::vector<std::string> files;
  std::string node_name;
  std::string node_zone;
  std::string output = "table";
  bool quiet = false;
};

int RunRender(const RenderArgs& args) {
  auto loaded = kpx::controller::LoadManifests(args.files);
  if (!loaded.ok()) {
    std::cerr << "error: " << loaded.status().message() << "\n";
    return 1;
  }
  kpx::controller::NodeInfo node{args.node_name, args.node_zone};
  kpx::controller::TranslateResult result = kpx::controller::Translate(loaded->store.state(), node);
  if (!args.quiet) {
    for (const auto& w : loaded->warnings) std::cerr << "warning: " << w << "\n";
    for (const auto& w : result.warnings) std::cerr << "warning: " << w << "\n";
  }
  if (args.output == "json") {
    std::cout << kpx::controller::TableToJson(result).dump(2) << "\n";
  } else {
    std::cout << kpx::controller::TableToText(result);
  }
  return 0;
}

// ---------------------------------------------------------------- live commands

struct LiveArgs {
  std::string socket = "/run/kpx/kpxd.sock";
  std::string output = "table";
};

// One admin API call: GET when `request` is null, else POST it as JSON. Exit
// codes: 0 ok, 1 kpxd said no (4xx/5xx: its error is printed), 3 kpxd
// unreachable.
int AdminCall(const LiveArgs& args, const std::string& path, const nlohmann::json* request,
              nlohmann::json* out) {
  httplib::Client client(args.socket);
  client.set_address_family(AF_UNIX);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(10, 0);
  auto res = request == nullptr
                 ? client.Get(path.c_str())
                 : client.Post(path.c_str(), request->dump(), "application/json");
  if (!res) {
    std::cerr << "error: cannot reach kpxd at unix:" << args.socket << " ("
              << httplib::to_string(res.error()) << "); is kpxd running? (--socket)\n";
    return 3;
  }
  nlohmann::json body = nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (res->status >= 400) {
    std::cerr << "error: "
              << (body.is_object() && body.contains("error") ? body["error"].get<std::string>()
                                                             : res->body)
              << "\n";
    return 1;
  }
  if (body.is_discarded()) {
    std::cerr << "error: kpxd answered with invalid JSON\n";
    return 1;
  }
  *out = std::move(body);
  return 0;
}

int AdminGet(const LiveArgs& args, const std::string& path, nlohmann::json* out) {
  return AdminCall(args, path, nullptr, out);
}

int AdminPost(const LiveArgs& args, const std::string& path, const nlohmann::json& request,
              nlohmann::json* out) {
  return AdminCall(args, path, &request, out);
}

void PrintYaml(const nlohmann::json& j, int indent, std::ostream& os);

void PrintScalar(const nlohmann::json& j, std::ostream& os) {
  if (j.is_string()) {
    os << nlohmann::json(j.get<std::string>()).dump();  // quoted, escaped
  } else {
    os << j.dump();
  }
}

void PrintYaml(const nlohmann::json& j, int indent, std::ostream& os) {
  std::string pad(indent, ' ');
  if (j.is_object()) {
    if (j.empty()) os << pad << "{}\n";
    for (auto it = j.begin(); it != j.end(); ++it) {
      os << pad << it.key() << ":";
      if (it->is_structured() && !it->empty()) {
        os << "\n";
        PrintYaml(*it, indent + 2, os);
      } else {
        os << " ";
        if (it->is_structured()) os << (it->is_array() ? "[]" : "{}"); else PrintScalar(*it, os);
        os << "\n";
      }
    }
  } else if (j.is_array()) {
    for (const auto& e : j) {
      if (e.is_structured() && !e.empty()) {
        std::ostringstream inner;
        PrintYaml(e, indent + 2, inner);
        std::string s = inner.str();
        s.replace(indent, 1, "-");  // "  key:" -> "- key:" for the first line
        os << s;
      } else {
        os << pad << "- ";
        PrintScalar(e, os);
        os << "\n";
      }
    }
  } else {
    os << pad;
    PrintScalar(j, os);
    os << "\n";
  }
}

// Prints `j` as json/yaml, or calls `table` for the table format.
void Print(const LiveArgs& args, const nlohmann::json& j,
           const std::function<void(const nlohmann::json&)>& table) {
  if (args.output == "json") {
    std::cout << j.dump(2) << "\n";
  } else if (args.output == "yaml") {
    PrintYaml(j, 0, std::cout);
  } else {
    table(j);
  }
}

void PrintRows(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 3, ' ');
    }
    std::cout << line << "\n";
  }
}

std::string Str(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return "-";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

int RunGetServices(const LiveArgs& args, const std::string& name, bool backends_view) {
  nlohmann::json j;
  std::string path = "/v1/services";
  if (!name.empty()) path += "?name=" + httplib::detail::encode_query_param(name);
  if (int rc = AdminGet(args, path, &j); rc != 0) return rc;
  Print(args, j, [&](const nlohmann::json& body) {
    std::vector<std::vector<std::string>> rows;
    if (!backends_view) {
      rows.push_back({"SERVICE", "TYPE", "FRONTEND", "BACKENDS", "ACTIVE", "TOTAL", "REJECTED",
                      "DATAPLANE"});
    } else {
      rows.push_back({"SERVICE", "FRONTEND", "BACKEND", "NODE", "READY", "HEALTHY", "ACTIVE",
                      "TOTAL", "FAILED"});
    }
    for (const auto& s : body["services"]) {
      const auto& fe = s["frontend"];
      std::string frontend = Str(fe, "ip") + ":" + Str(fe, "port") + "/" + Str(fe, "protocol");
      nlohmann::json conns = s.value("connections", nlohmann::json::object());
      if (!backends_view) {
        int healthy = 0;
        for (const auto& b : s["backends"]) healthy += b.value("healthy", true) ? 1 : 0;
        rows.push_back({Str(s, "service"), Str(fe, "type"), frontend,
                        std::to_string(healthy) + "/" + std::to_string(s["backends"].size()) +
                            " healthy",
                        Str(conns, "active"), Str(conns, "total"), Str(conns, "rejected"),
                        Str(s, "dataplane")});
        continue;
      }
      for (const auto& b : s["backends"]) {
        nlohmann::json bc = b.value("connections", nlohmann::json::object());
        rows.push_back({Str(s, "service"), frontend, Str(b, "ip") + ":" + Str(b, "port"),
                        Str(b, "node"), Str(b, "ready"), Str(b, "healthy"), Str(bc, "active"),
                        Str(bc, "total"), Str(bc, "failed_connects")});
      }
    }
    PrintRows(rows);
  });
  return 0;
}

int RunSimpleGet(const LiveArgs& args, const std::string& path) {
  nlohmann::json j;
  if (int rc = AdminGet(args, path, &j); rc != 0) return rc;
  Print(args, j, [](const nlohmann::json& body) {
    std::vector<std::vector<std::string>> rows;
    for (auto it = body.begin(); it != body.end(); ++it) {
      rows.push_back({it.key() + ":", it->is_string() ? it->get<std::string>() : it->dump()});
    }
    PrintRows(rows);
  });
  return 0;
}

int RunEndpoints(const LiveArgs& args, const std::string& op, const std::string& service,
                 const std::string& endpoints) {
  nlohmann::json list = nlohmann::json::array();
  std::vector<std::string> parts = absl::StrSplit(endpoints, ',', absl::SkipEmpty());
  for (const std::string& e : parts) list.push_back(e);
  nlohmann::json request = {{"op", op}, {"service", service}, {"endpoints", list}};
  nlohmann::json out;
  if (int rc = AdminPost(args, "/v1/endpoints", request, &out); rc != 0) return rc;
  std::cout << "endpoints " << op << ": " << service << "\n";
  return 0;
}

int RunDrain(const LiveArgs& args, const std::string& service, const std::string& endpoint) {
  nlohmann::json out;
  if (int rc = AdminPost(args, "/v1/drain", {{"service", service}, {"endpoint", endpoint}}, &out);
      rc != 0) {
    return rc;
  }
  std::cout << "draining " << endpoint << " of " << service
            << ": no new connections; existing ones finish\n";
  return 0;
}

int RunApplyDelete(const LiveArgs& args, bool apply, const std::vector<std::string>& files) {
  for (const std::string& file : files) {
    nlohmann::json request = {{"filename", file}};
    if (apply) {
      std::ifstream in(file);
      if (!in) {
        std::cerr << "error: " << file << ": cannot read\n";
        return 1;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      request["content"] = ss.str();
    }
    nlohmann::json out;
    if (int rc = AdminPost(args, apply ? "/v1/apply" : "/v1/delete", request, &out); rc != 0) {
      return rc;
    }
    std::cout << file << (apply ? " applied" : " deleted") << "\n";
  }
  return 0;
}

int RunHealth(const LiveArgs& args, const std::string& name) {
  nlohmann::json j;
  std::string path = "/v1/health";
  if (!name.empty()) path += "?name=" + httplib::detail::encode_query_param(name);
  if (int rc = AdminGet(args, path, &j); rc != 0) return rc;
  Print(args, j, [](const nlohmann::json& body) {
    if (!body.value("enabled", true)) {
      std::cout << "health checking is off (kpxd --health-checks=false): only readiness counts\n";
    }
    std::vector<std::vector<std::string>> rows = {
        {"SERVICE", "BACKEND", "STATE", "IN ROTATION", "LAST RESULT", "LATENCY", "PROBES",
         "FAILURES", "PASSIVE", "CHECK"}};
    for (const auto& s : body["services"]) {
      for (const auto& b : s["backends"]) {
        std::string state = Str(b, "state");
        if (b.value("draining", false)) state += " (drained)";
        std::string latency = "-";
        if (b.contains("last_latency_ms")) {
          char buf[32];
          std::snprintf(buf, sizeof(buf), "%.2fms", b["last_latency_ms"].get<double>());
          latency = buf;
        }
        rows.push_back({Str(s, "service"), Str(b, "backend"), state, Str(b, "in_rotation"),
                        Str(b, "last_result"), latency, Str(b, "probes"), Str(b, "failures"),
                        Str(b, "passive_failures"), Str(b, "check")});
      }
    }
    PrintRows(rows);
    for (const auto& s : body["services"]) {
      std::string counts;
      for (auto it = s["counts"].begin(); it != s["counts"].end(); ++it) {
        counts += (counts.empty() ? "" : ", ") + std::to_string(it->get<int>()) + " " + it.key();
      }
      std::cout << Str(s, "service") << ": " << counts << "\n";
    }
  });
  return 0;
}

int RunTrace(const LiveArgs& args, const std::string& src, const std::string& dst) {
  nlohmann::json j;
  std::string path = "/v1/trace?src=" + httplib::detail::encode_query_param(src) +
                     "&dst=" + httplib::detail::encode_query_param(dst);
  if (int rc = AdminGet(args, path, &j); rc != 0) return rc;
  Print(args, j, [](const nlohmann::json& body) {
    std::cout << "flow:      " << Str(body["flow"], "src") << " -> " << Str(body["flow"], "dst")
              << " TCP\n";
    std::cout << "service:   " << Str(body, "service") << " port " << Str(body, "port") << " ("
              << Str(body, "type") << ", frontend " << Str(body, "frontend") << ")\n";
    std::cout << "dataplane: " << Str(body, "dataplane") << "\n";
    std::cout << "backend:   " << (body["backend"].is_null() ? "(none definite)" : Str(body, "backend"))
              << "  [" << Str(body, "decision") << "]\n";
    std::cout << "why:\n";
    for (const auto& s : body["steps"]) std::cout << "  - " << s.get<std::string>() << "\n";
  });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kpxctl: inspect and operate kpx, the Kubernetes node service proxy"};
  app.require_subcommand(1);

  RenderArgs render;
  CLI::App* render_cmd = app.add_subcommand(
      "render", "Translate manifests into kpx's virtual-IP rules offline (no daemon needed)");
  render_cmd->add_option("-f,--filename", render.files, "Manifest file or directory (repeatable)")
      ->required()
      ->allow_extra_args(false);
  render_cmd->add_option("--node-name", render.node_name,
                         "Node to render for (endpoint locality, traffic policy Local)")
      ->required();
  render_cmd->add_option("--node-zone", render.node_zone, "Zone of the node (topology hints)");
  render_cmd->add_option("-o,--output", render.output, "Output format")
      ->check(CLI::IsMember({"table", "json"}));
  render_cmd->add_flag("-q,--quiet", render.quiet, "Do not print warnings");

  LiveArgs live;
  app.add_option("--socket", live.socket, "kpxd's admin socket")->capture_default_str();
  auto add_output = [&](CLI::App* cmd) {
    cmd->add_option("-o,--output", live.output, "Output format")
        ->check(CLI::IsMember({"table", "json", "yaml"}));
  };
  CLI::App* get_cmd = app.add_subcommand("get", "Show what a running kpxd serves");
  get_cmd->require_subcommand(1);
  std::string get_name;
  CLI::App* get_services = get_cmd->add_subcommand(
      "services", "Frontends with their backends, health and connection counters");
  get_services->add_option("name", get_name, "NAMESPACE/NAME of one Service");
  add_output(get_services);
  CLI::App* get_backends =
      get_cmd->add_subcommand("backends", "One row per backend: readiness, health, connections");
  get_backends->add_option("name", get_name, "NAMESPACE/NAME of one Service");
  add_output(get_backends);
  CLI::App* stats_cmd = app.add_subcommand("stats", "kpxd's sync and dataplane counters");
  add_output(stats_cmd);
  std::string health_name;
  CLI::App* health_cmd = app.add_subcommand(
      "health", "Per-backend health: state, last probe result and latency, counts");
  health_cmd->add_option("name", health_name, "NAMESPACE/NAME of one Service");
  add_output(health_cmd);
  std::string trace_src, trace_dst;
  CLI::App* trace_cmd = app.add_subcommand(
      "trace", "Which backend a flow gets and why (frontend, conntrack, affinity, Maglev, health)");
  trace_cmd->add_option("src", trace_src, "Client SRC_IP[:PORT] (the port picks the Maglev slot)")
      ->required();
  trace_cmd->add_option("dst", trace_dst, "Frontend VIP:PORT (or NODE_IP:NODEPORT)")->required();
  add_output(trace_cmd);
  CLI::App* version_cmd = app.add_subcommand("version", "kpxctl's and the running kpxd's version");
  add_output(version_cmd);

  CLI::App* endpoints_cmd = app.add_subcommand(
      "endpoints", "Override a Service's backends (persisted by kpxd; undo with reset)");
  endpoints_cmd->require_subcommand(1);
  std::string ep_service, ep_list;
  std::map<std::string, CLI::App*> ep_ops;
  for (const char* op : {"set", "add", "remove", "reset"}) {
    CLI::App* c = endpoints_cmd->add_subcommand(
        op, std::string(op) == "reset" ? "Drop the override: back to the EndpointSlices"
                                        : std::string(op) + " backends IP:PORT[,IP:PORT...]");
    c->add_option("service", ep_service, "NAMESPACE/NAME")->required();
    if (std::string(op) != "reset") c->add_option("endpoints", ep_list, "IP:PORT[,...]")->required();
    ep_ops[op] = c;
  }
  std::string drain_service, drain_endpoint;
  CLI::App* drain_cmd = app.add_subcommand(
      "drain", "Take one backend out of rotation: no new connections, existing ones finish");
  drain_cmd->add_option("service", drain_service, "NAMESPACE/NAME")->required();
  drain_cmd->add_option("endpoint", drain_endpoint, "IP:PORT")->required();
  std::vector<std::string> apply_files;
  CLI::App* apply_cmd = app.add_subcommand("apply", "Push manifests into a running kpxd (persisted)");
  apply_cmd->add_option("-f,--filename", apply_files, "Manifest file (repeatable)")->required();
  CLI::App* delete_cmd = app.add_subcommand("delete", "Remove manifests pushed with apply");
  delete_cmd->add_option("-f,--filename", apply_files, "Manifest file (repeatable)")->required();

  CLI11_PARSE(app, argc, argv);
  for (const auto& [op, cmd] : ep_ops) {
    if (cmd->parsed()) return RunEndpoints(live, op, ep_service, ep_list);
  }
  if (drain_cmd->parsed()) return RunDrain(live, drain_service, drain_endpoint);
  if (apply_cmd->parsed()) return RunApplyDelete(live, /*apply=*/true, apply_files);
  if (delete_cmd->parsed()) return RunApplyDelete(live, /*apply=*/false, apply_files);
  if (render_cmd->parsed()) return RunRender(render);
  if (get_services->parsed()) return RunGetServices(live, get_name, /*backends_view=*/false);
  if (get_backends->parsed()) return RunGetServices(live, get_name, /*backends_view=*/true);
  if (stats_cmd->parsed()) return RunSimpleGet(live, "/v1/stats");
  if (health_cmd->parsed()) return RunHealth(live, health_name);
  if (trace_cmd->parsed()) return RunTrace(live, trace_src, trace_dst);
  if (version_cmd->parsed()) {
    std::cout << "kpxctl 0.1.0\n";
    return RunSimpleGet(live, "/v1/version");
  }
  return 2;
}

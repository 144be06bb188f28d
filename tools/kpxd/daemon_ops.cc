// kpxd's operator actions behind the admin API: endpoint overrides, drain,
// apply/delete of manifests, and their persistence under --state-dir.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "controller/manifest_parser.h"
#include "controller/source/manifest_files.h"
#include "controller/table_format.h"
#include "glog/logging.h"
#include "tools/kpxd/daemon.h"

namespace kpx::kpxd {
namespace {

using controller::BackendAddr;
using controller::EndpointOverride;
using controller::NamespacedName;
using Result = std::pair<int, nlohmann::json>;

Result BadRequest(const std::string& message) { return {400, {{"error", message}}}; }

// "10.0.0.1:8080" -> BackendAddr, or an error naming the value.
absl::StatusOr<BackendAddr> ParseEndpoint(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not IP:PORT"));
  }
  std::optional<Ipv4> ip = Ipv4::Parse(std::string_view(text).substr(0, colon));
  if (!ip || ip->IsUnspecified()) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": not an IPv4 address"));
  }
  int port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": port must be 1..65535"));
  }
  return BackendAddr{*ip, static_cast<uint16_t>(port)};
}

absl::StatusOr<NamespacedName> ParseService(const nlohmann::json& request) {
  if (!request.is_object() || !request.contains("service") || !request["service"].is_string()) {
    return absl::InvalidArgumentError("\"service\" (NAMESPACE/NAME) is required");
  }
  std::string s = request["service"];
  std::vector<std::string> parts = absl::StrSplit(s, '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("service \"", s, "\" is not NAMESPACE/NAME"));
  }
  return NamespacedName{parts[0], parts[1]};
}

std::string AddrString(const BackendAddr& a) { return absl::StrCat(a.ip.ToString(), ":", a.port); }

nlohmann::json OverrideJson(const EndpointOverride& o) {
  auto list = [](const std::vector<BackendAddr>& v) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& a : v) j.push_back(AddrString(a));
    return j;
  };
  nlohmann::json j = {{"add", list(o.add)}, {"remove", list(o.remove)}, {"drain", list(o.drain)}};
  if (o.set) j["set"] = list(*o.set);
  return j;
}

std::optional<EndpointOverride> OverrideFromJson(const nlohmann::json& j) {
  EndpointOverride o;
  auto list = [](const nlohmann::json& arr, std::vector<BackendAddr>* out) {
    if (!arr.is_array()) return false;
    for (const auto& e : arr) {
      if (!e.is_string()) return false;
      auto a = ParseEndpoint(e.get<std::string>());
      if (!a.ok()) return false;
      out->push_back(*a);
    }
    return true;
  };
  if (j.contains("set")) {
    o.set.emplace();
    if (!list(j["set"], &*o.set)) return std::nullopt;
  }
  for (const char* key : {"add", "remove", "drain"}) {
    std::vector<BackendAddr>* dst = key[0] == 'a' ? &o.add : key[0] == 'r' ? &o.remove : &o.drain;
    if (j.contains(key) && !list(j[key], dst)) return std::nullopt;
  }
  return o;
}

void AddUnique(std::vector<BackendAddr>* v, const BackendAddr& a) {
  if (std::find(v->begin(), v->end(), a) == v->end()) v->push_back(a);
}
void Erase(std::vector<BackendAddr>* v, const BackendAddr& a) {
  v->erase(std::remove(v->begin(), v->end(), a), v->end());
}

// Manifest names pushed with `kpxctl apply` become files: keep them to a safe
// basename.
std::string SafeName(const std::string& name) {
  std::string base = std::filesystem::path(name).filename().string();
  std::string out;
  for (char c : base) out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c : '_');
  if (out.empty() || out[0] == '.') out = "manifest" + out;
  if (!controller::IsManifestFileName(out)) out += ".yaml";
  return out;
}

}  // namespace

std::string Daemon::AppliedPath(const std::string& name) const {
  return options_.state_dir + "/applied/" + SafeName(name);
}

absl::Status Daemon::LoadOverrides() {
  if (options_.state_dir.empty()) return absl::OkStatus();
  std::string path = options_.state_dir + "/overrides.json";
  std::ifstream in(path);
  if (!in) return absl::OkStatus();  // none yet
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object; ignoring it"));
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    auto svc = ParseService({{"service", it.key()}});
    auto o = OverrideFromJson(it.value());
    if (!svc.ok() || !o) {
      LOG(ERROR) << path << ": override for \"" << it.key() << "\" is malformed; skipped";
      continue;
    }
    if (absl::Status s = reconciler_->SetOverride(*svc, *o); !s.ok()) return s;
    LOG(INFO) << "restored endpoint override for " << it.key();
  }
  return absl::OkStatus();
}

absl::Status Daemon::SaveOverrides() const {
  if (options_.state_dir.empty()) return absl::OkStatus();
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [svc, o] : reconciler_->overrides()) j[svc.String()] = OverrideJson(o);
  std::string path = options_.state_dir + "/overrides.json";
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  return absl::OkStatus();
}

Result Daemon::HandleEndpoints(const nlohmann::json& request) {
  auto svc = ParseService(request);
  if (!svc.ok()) return BadRequest(std::string(svc.status().message()));
  std::string op = request.value("op", "");
  if (op != "set" && op != "add" && op != "remove" && op != "reset") {
    return BadRequest("\"op\" must be set, add, remove or reset");
  }
  if (!reconciler_->store().state().services.contains(*svc)) {
    return {404, {{"error", absl::StrCat("service ", svc->String(), " not found")}}};
  }
  std::vector<BackendAddr> endpoints;
  if (op != "reset") {
    if (!request.contains("endpoints") || !request["endpoints"].is_array() ||
        (op != "set" && request["endpoints"].empty())) {
      return BadRequest("\"endpoints\" must be a list of IP:PORT");
    }
    for (const auto& e : request["endpoints"]) {
      if (!e.is_string()) return BadRequest("\"endpoints\" must be a list of IP:PORT");
      auto a = ParseEndpoint(e.get<std::string>());
      if (!a.ok()) return BadRequest(std::string(a.status().message()));
      endpoints.push_back(*a);
    }
  }
  std::optional<EndpointOverride> o;
  if (op != "reset") {
    auto it = reconciler_->overrides().find(*svc);
    o = it != reconciler_->overrides().end() ? it->second : EndpointOverride{};
    if (op == "set") {
      o->set = endpoints;
      o->add.clear();
      o->remove.clear();
    }
    for (const auto& a : endpoints) {
      if (op == "add") {
        AddUnique(&o->add, a);
        Erase(&o->remove, a);
      } else if (op == "remove") {
        AddUnique(&o->remove, a);
        Erase(&o->add, a);
      }
    }
  }
  absl::Status s = reconciler_->SetOverride(*svc, o);
  if (absl::Status saved = SaveOverrides(); !saved.ok()) LOG(ERROR) << saved.message();
  if (!s.ok()) return {503, {{"error", absl::StrCat("dataplane: ", s.message(), " (will retry)")}}};
  return ServicesJson(svc->String());
}

Result Daemon::HandleDrain(const nlohmann::json& request) {
  auto svc = ParseService(request);
  if (!svc.ok()) return BadRequest(std::string(svc.status().message()));
  if (!request.contains("endpoint") || !request["endpoint"].is_string()) {
    return BadRequest("\"endpoint\" (IP:PORT) is required");
  }
  auto a = ParseEndpoint(request["endpoint"].get<std::string>());
  if (!a.ok()) return BadRequest(std::string(a.status().message()));
  bool known = false;
  for (const controller::ServiceRule* rule : reconciler_->DesiredRulesOf(*svc)) {
    for (const auto& b : rule->backends) known |= b.ip == a->ip && b.port == a->port;
  }
  if (!known) {
    return {404, {{"error", absl::StrCat(AddrString(*a), " is not a backend of ", svc->String())}}};
  }
  auto it = reconciler_->overrides().find(*svc);
  EndpointOverride o = it != reconciler_->overrides().end() ? it->second : EndpointOverride{};
  AddUnique(&o.drain, *a);
  absl::Status s = reconciler_->SetOverride(*svc, o);
  if (absl::Status saved = SaveOverrides(); !saved.ok()) LOG(ERROR) << saved.message();
  if (!s.ok()) return {503, {{"error", absl::StrCat("dataplane: ", s.message(), " (will retry)")}}};
  return ServicesJson(svc->String());
}

Result Daemon::HandleApply(const nlohmann::json& request) {
  if (options_.state_dir.empty() || applied_ == nullptr) {
    return {409, {{"error", "kpxd runs without --state-dir: apply is disabled"}}};
  }
  if (!request.contains("filename") || !request["filename"].is_string() ||
      !request.contains("content") || !request["content"].is_string()) {
    return BadRequest("\"filename\" and \"content\" are required");
  }
  std::string filename = request["filename"];
  std::string content = request["content"];
  auto parsed = controller::ParseManifest(content, filename);
  if (!parsed.ok()) return BadRequest(std::string(parsed.status().message()));
  std::string path = AppliedPath(filename);
  std::string tmp = options_.state_dir + "/applied/." + SafeName(filename) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    if (!out) return {500, {{"error", absl::StrCat("cannot write ", tmp)}}};
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return {500, {{"error", absl::StrCat("cannot write ", path, ": ", ec.message())}}};
  ApplyUpdates(applied_->ReadEvents());  // the rename is already queued by inotify
  return {200,
          {{"applied", path},
           {"services", parsed->objects.services.size()},
           {"endpointslices", parsed->objects.slices.size()},
           {"endpoints", parsed->objects.endpoints.size()}}};
}

Result Daemon::HandleDelete(const nlohmann::json& request) {
  if (options_.state_dir.empty() || applied_ == nullptr) {
    return {409, {{"error", "kpxd runs without --state-dir: delete is disabled"}}};
  }
  if (!request.contains("filename") || !request["filename"].is_string()) {
    return BadRequest("\"filename\" is required");
  }
  std::string path = AppliedPath(request["filename"]);
  std::error_code ec;
  if (!std::filesystem::remove(path, ec)) {
    return {404, {{"error", absl::StrCat(request["filename"].get<std::string>(),
                                         " was not applied with kpxctl apply")}}};
  }
  ApplyUpdates(applied_->ReadEvents());
  return {200, {{"deleted", path}}};
}

}  // namespace kpx::kpxd

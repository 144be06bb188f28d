// Manifest decoding. libyaml (controller/yaml_tree.h) parses YAML and JSON
// alike and marks every node with its line, which is what lets errors name
// "svc.yaml:14: default/web: spec.ports[1].port". nlohmann::json only steps
// in for JSON that libyaml rejects (YAML 1.1: surrogate pairs, long keys, tab
// indentation); those nodes carry no line, so their errors name the document
// instead.
#include "controller/manifest_parser.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "controller/base/status_macros.h"
#include "controller/base/utf8.h"
#include "controller/yaml_tree.h"

namespace kpx::controller {
namespace {

using Node = YamlNode;

constexpr int kMaxErrors = 20;      // past this, more lines bury the first
constexpr int kMaxListNesting = 4;  // List inside List inside ...
constexpr int kMaxJsonDepth = 512;  // FromJson recursion bound
constexpr size_t kMaxFileBytes = size_t{256} << 20;
constexpr char kServiceNameLabel[] = "kubernetes.io/service-name";

// Absent and null fields mean the same thing, as in Kubernetes' JSON decoding.
// IsDefined() first: Type() throws on the zombie nodes of missing keys.
bool Present(const Node& n) { return n.IsDefined() && !n.IsNull(); }

int LineOf(const Node& n) {
  if (!n.IsDefined()) return 0;
  const YAML::Mark mark = n.Mark();
  return mark.line >= 0 ? mark.line + 1 : 0;
}

// A value as messages show it: escaped, and cut short if long.
std::string Quote(absl::string_view v) {
  constexpr size_t kMax = 64;
  return absl::StrCat("\"", absl::CHexEscape(v.substr(0, kMax)), v.size() > kMax ? "...\"" : "\"");
}

const char* TypeName(const Node& n) {
  if (!n.IsDefined()) return "nothing";
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "a string";
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Undefined: return "nothing";
  }
  return "?";
}

// Where a field is in its object ("spec.ports[0].port"), for messages. Built
// as a chain of stack objects and spelled out only when a message needs it: a
// 10k-Service start formatted ~1.5M path strings that no message used (a
// fifth of the decoder's time). A path refers to its parent: it lives no
// longer than the call it is made for.
class FieldPath {
 public:
  FieldPath(const char* field) : field_(field) {}  // NOLINT: a top-level field
  FieldPath(absl::string_view field) : field_(field) {}  // NOLINT
  FieldPath(const FieldPath&) = default;
  FieldPath& operator=(const FieldPath&) = delete;

  FieldPath Child(absl::string_view key) const { return FieldPath(this, key, kField); }
  FieldPath Index(int i) const { return FieldPath(this, {}, i); }
  FieldPath Key(absl::string_view key) const { return FieldPath(this, key, kKey); }
  std::string str() const {
    std::string out = parent_ == nullptr ? std::string() : parent_->str();
    if (index_ >= 0) {
      absl::StrAppend(&out, "[", index_, "]");
    } else if (index_ == kKey) {
      absl::StrAppend(&out, "[", Quote(field_), "]");
    } else {
      absl::StrAppend(&out, out.empty() ? "" : ".", field_);
    }
    return out;
  }

 private:
  static constexpr int kField = -1;
  static constexpr int kKey = -2;
  FieldPath(const FieldPath* parent, absl::string_view field, int index)
      : parent_(parent), field_(field), index_(index) {}
  const FieldPath* parent_ = nullptr;
  absl::string_view field_;
  int index_ = kField;
};

FieldPath Child(const FieldPath& path, absl::string_view key) { return path.Child(key); }
FieldPath Index(const FieldPath& path, int i) { return path.Index(i); }

bool IsIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// Plain decimal, as Kubernetes' JSON decoder takes for int32 fields: no hex,
// octal or fractions.
std::optional<int64_t> ParseInt(absl::string_view s) {
  absl::string_view digits = s;
  absl::ConsumePrefix(&digits, "-");
  if (digits.empty() || digits.size() > 12) return std::nullopt;
  for (char c : digits) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  int64_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) return std::nullopt;
  return v;
}

// YAML 1.2 booleans plus the YAML 1.1 words kubectl's decoder also takes.
std::optional<bool> ParseBool(absl::string_view s) {
  const std::string l = absl::AsciiStrToLower(s);
  if (l == "true" || l == "yes" || l == "on") return true;
  if (l == "false" || l == "no" || l == "off") return false;
  return std::nullopt;
}

template <typename T>
using Table = std::initializer_list<std::pair<absl::string_view, T>>;

// Everything decoded from one file, with the errors found on the way. Decoding
// carries on after an error so one run reports several, but any error fails
// the whole file.
class Decoder {
 public:
  Decoder(absl::string_view file, ParseResult* out) : file_(file), out_(out) {}

  void Document(const Node& root, int index) {
    if (!Present(root)) return;  // "---" with nothing, or only comments
    ++out_->documents;
    ctx_ = {index, LineOf(root), absl::StrCat("document ", index + 1)};
    if (!root.IsMap()) {
      ErrorNoObject(root, absl::StrCat("document ", index + 1, " is ", TypeName(root),
                                       ", not a mapping (a Kubernetes object)"));
      return;
    }
    Object(root, "", "", 0);
  }

  absl::Status Finish() const {
    if (errors_.empty()) return absl::OkStatus();
    std::string msg = absl::StrJoin(errors_, "\n");
    if (error_count_ > static_cast<int>(errors_.size())) {
      absl::StrAppend(&msg, "\n... and ", error_count_ - errors_.size(), " more errors");
    }
    return absl::InvalidArgumentError(msg);
  }

 private:
  // The object being decoded, for message prefixes.
  struct Context {
    int document = 0;
    int line = 0;       // the object's mapping, 0 when unknown
    std::string label;  // "ns/name" once known; before that the kind or "document N"
  };

  // ------------------------------------------------------------ messages

  std::string Where(const Node& at) const {
    int line = LineOf(at);
    if (line == 0) line = ctx_.line;
    if (line > 0) return absl::StrCat(file_, ":", line);
    return absl::StrCat(file_, " (document ", ctx_.document + 1, ")");
  }

  void Push(std::string msg) {
    if (++error_count_ <= kMaxErrors) errors_.push_back(std::move(msg));
  }
  void ErrorNoObject(const Node& at, absl::string_view problem) {
    Push(absl::StrCat(Where(at), ": ", problem));
  }
  void Error(const Node& at, const FieldPath& path, absl::string_view problem) {
    Push(absl::StrCat(Where(at), ": ", ctx_.label, ": ", path.str(), ": ", problem));
  }
  void TypeError(const Node& at, const FieldPath& path, absl::string_view expected) {
    if (at.IsDefined() && at.IsScalar()) {
      Error(at, path, absl::StrCat(Quote(at.Scalar()), " is not ", expected));
    } else {
      Error(at, path, absl::StrCat("expected ", expected, ", found ", TypeName(at)));
    }
  }

  // ------------------------------------------------------------ field readers
  // Each records an error for a bad value; absent or null fields yield the
  // default without one.

  bool IsMap(const Node& n, const FieldPath& path) {
    if (!Present(n)) return false;
    if (n.IsMap()) return true;
    TypeError(n, path, "a map");
    return false;
  }
  bool IsList(const Node& n, const FieldPath& path) {
    if (!Present(n)) return false;
    if (n.IsSequence()) return true;
    TypeError(n, path, "a list");
    return false;
  }
  // List items may not be null: Kubernetes would read a zero struct there.
  bool ItemIsMap(const Node& n, const FieldPath& path) {
    if (n.IsDefined() && n.IsMap()) return true;
    TypeError(n, path, "a map");
    return false;
  }

  // Calls f(item, "path[i]") for each map in the list at `n`.
  template <typename F>
  void ForEachMap(const Node& n, const FieldPath& path, F f) {
    if (!IsList(n, path)) return;
    int i = 0;
    for (const Node& item : n) {
      const FieldPath item_path = Index(path, i++);
      if (ItemIsMap(item, item_path)) f(item, item_path);
    }
  }

  std::string Str(const Node& n, const FieldPath& path) {
    if (!Present(n)) return "";
    if (n.IsScalar()) return n.Scalar();
    TypeError(n, path, "a string");
    return "";
  }

  std::optional<int32_t> Int(const Node& n, const FieldPath& path, int64_t lo, int64_t hi,
                             absl::string_view what) {
    if (!Present(n)) return std::nullopt;
    if (!n.IsScalar()) {
      TypeError(n, path, what);
      return std::nullopt;
    }
    const std::optional<int64_t> v = ParseInt(n.Scalar());
    if (!v) {
      Error(n, path, absl::StrCat(Quote(n.Scalar()), " is not ", what));
      return std::nullopt;
    }
    if (*v < lo || *v > hi) {
      Error(n, path, absl::StrCat(Quote(n.Scalar()), " is out of range (", lo, "..", hi, ")"));
      return std::nullopt;
    }
    return static_cast<int32_t>(*v);
  }

  std::optional<bool> Bool(const Node& n, const FieldPath& path) {
    if (!Present(n)) return std::nullopt;
    if (!n.IsScalar()) {
      TypeError(n, path, "a bool");
      return std::nullopt;
    }
    const std::optional<bool> b = ParseBool(n.Scalar());
    if (!b) Error(n, path, absl::StrCat(Quote(n.Scalar()), " is not a bool (true or false)"));
    return b;
  }

  std::string Ip(const Node& n, const FieldPath& path, bool allow_none, bool allow_empty) {
    if (Present(n) && !n.IsScalar()) {
      TypeError(n, path, "an IP address");
      return "";
    }
    const std::string s = Str(n, path);
    if ((s.empty() && allow_empty) || (s == "None" && allow_none) || IsIp(s)) return s;
    Error(n, path, absl::StrCat(Quote(s), allow_none ? " is not an IP address or \"None\""
                                                     : " is not an IP address"));
    return s;
  }

  template <typename T>
  std::optional<T> Enum(const Node& n, const FieldPath& path, Table<T> table,
                        absl::string_view problem) {
    if (!Present(n)) return std::nullopt;
    const std::string s = Str(n, path);
    if (!n.IsScalar()) return std::nullopt;
    for (const auto& [text, value] : table) {
      if (s == text) return value;
    }
    Error(n, path, absl::StrCat(Quote(s), " ", problem));
    return std::nullopt;
  }

  Protocol Proto(const Node& n, const FieldPath& path) {
    return Enum<Protocol>(n, path,
                          {{"TCP", Protocol::kTCP}, {"UDP", Protocol::kUDP},
                           {"SCTP", Protocol::kSCTP}, {"", Protocol::kTCP}},
                          "is not a protocol (TCP, UDP or SCTP)")
        .value_or(Protocol::kTCP);
  }

  std::optional<int32_t> Port(const Node& n, const FieldPath& path) {
    return Int(n, path, 1, 65535, "a port number");
  }

  void StringMap(const Node& n, const FieldPath& path,
                 absl::btree_map<std::string, std::string>* out) {
    if (!IsMap(n, path)) return;
    for (const auto& kv : n.pairs()) {
      if (!kv.first.IsScalar()) {
        TypeError(kv.first, path, "a string key");
        continue;
      }
      const std::string& key = kv.first.Scalar();
      (*out)[key] = Str(kv.second, path.Key(key));
    }
  }

  std::vector<std::string> IpList(const Node& n, const FieldPath& path, bool allow_none) {
    std::vector<std::string> out;
    if (!IsList(n, path)) return out;
    int i = 0;
    for (const Node& item : n) out.push_back(Ip(item, Index(path, i++), allow_none, false));
    return out;
  }

  // ------------------------------------------------------------ objects

  void Object(const Node& obj, absl::string_view default_api, absl::string_view default_kind,
              int nesting) {
    ctx_.line = LineOf(obj);
    std::string api = Str(obj["apiVersion"], "apiVersion");
    std::string kind = Str(obj["kind"], "kind");
    if (api.empty()) api = std::string(default_api);
    if (kind.empty()) kind = std::string(default_kind);
    // A name in hand makes every later message point at the object.
    const Node meta = obj["metadata"];
    if (Present(meta) && meta.IsMap() && Present(meta["name"]) && meta["name"].IsScalar() &&
        !meta["name"].Scalar().empty()) {
      const Node ns_node = meta["namespace"];
      const std::string ns = Present(ns_node) && ns_node.IsScalar() ? ns_node.Scalar() : "";
      ctx_.label = absl::StrCat(ns.empty() ? "default" : ns, "/", meta["name"].Scalar());
    } else if (!kind.empty()) {
      ctx_.label = kind;
    }
    if (api.empty()) Error(obj, "apiVersion", "is required");
    if (kind.empty()) Error(obj, "kind", "is required");
    if (api.empty() || kind.empty()) return;

    // kind: List (kubectl get -o yaml), or a typed list straight from the API
    // (ServiceList, ...) whose items leave out their own kind and apiVersion.
    if (absl::EndsWith(kind, "List")) {
      if (nesting >= kMaxListNesting) {
        Error(obj, "items", "lists are nested too deeply");
        return;
      }
      const bool generic = kind == "List";
      const std::string item_api = generic ? "" : api;
      const std::string item_kind =
          generic ? "" : std::string(absl::StripSuffix(kind, "List"));
      const Context list_ctx = ctx_;
      ForEachMap(obj["items"], "items", [&](const Node& item, const FieldPath& path) {
        ctx_.label = absl::StrCat(list_ctx.label, " ", path.str());
        Object(item, item_api, item_kind, nesting + 1);
        ctx_ = list_ctx;
      });
      return;
    }

    if (api == "v1" && kind == "Service") {
      DecodeService(obj);
    } else if (kind == "EndpointSlice" &&
               (api == "discovery.k8s.io/v1" || api == "discovery.k8s.io/v1beta1")) {
      DecodeSlice(obj, api == "discovery.k8s.io/v1beta1");
    } else if (api == "v1" && kind == "Endpoints") {
      DecodeEndpoints(obj);
    } else {
      ++out_->ignored_kinds[absl::StrCat(api, "/", kind)];
    }
  }

  bool Meta(const Node& obj, ObjectMeta* m) {
    m->source = {file_, ctx_.line, ctx_.document};
    const Node meta = obj["metadata"];
    if (!Present(meta)) {
      Error(obj, "metadata.name", "is required");
      return false;
    }
    if (!IsMap(meta, "metadata")) return false;
    const int errors_before = error_count_;
    m->id.name = Str(meta["name"], "metadata.name");
    if (m->id.name.empty()) {
      if (error_count_ == errors_before) Error(meta, "metadata.name", "is required");
      return false;
    }
    m->id.ns = Str(meta["namespace"], "metadata.namespace");
    if (m->id.ns.empty()) m->id.ns = "default";
    ctx_.label = m->id.String();
    StringMap(meta["labels"], "metadata.labels", &m->labels);
    StringMap(meta["annotations"], "metadata.annotations", &m->annotations);
    m->resource_version = Str(meta["resourceVersion"], "metadata.resourceVersion");
    return true;
  }

  void DecodeService(const Node& obj) {
    Service s;
    if (!Meta(obj, &s.meta)) return;
    const Node spec = obj["spec"];
    if (IsMap(spec, "spec")) DecodeServiceSpec(spec, &s);
    const Node status = obj["status"];
    if (IsMap(status, "status")) {
      const Node lb = status["loadBalancer"];
      if (IsMap(lb, "status.loadBalancer")) {
        ForEachMap(lb["ingress"], "status.loadBalancer.ingress",
                   [&](const Node& item, const FieldPath& path) {
                     LoadBalancerIngress in;
                     in.ip = Ip(item["ip"], Child(path, "ip"), false, true);
                     in.hostname = Str(item["hostname"], Child(path, "hostname"));
                     in.ip_mode = Str(item["ipMode"], Child(path, "ipMode"));
                     s.lb_ingress.push_back(std::move(in));
                   });
      }
    }
    Add(std::move(s), "Service", &out_->objects.services, &service_index_);
  }

  void DecodeServiceSpec(const Node& spec, Service* s) {
    s->type = Enum<ServiceType>(spec["type"], "spec.type",
                                {{"ClusterIP", ServiceType::kClusterIP},
                                 {"NodePort", ServiceType::kNodePort},
                                 {"LoadBalancer", ServiceType::kLoadBalancer},
                                 {"ExternalName", ServiceType::kExternalName},
                                 {"", ServiceType::kClusterIP}},
                                "is not a Service type (ClusterIP, NodePort, LoadBalancer or "
                                "ExternalName)")
                  .value_or(ServiceType::kClusterIP);
    s->cluster_ip = Ip(spec["clusterIP"], "spec.clusterIP", true, true);
    s->cluster_ips = IpList(spec["clusterIPs"], "spec.clusterIPs", true);
    const Node selector = spec["selector"];
    if (IsMap(selector, "spec.selector")) s->has_selector = selector.size() > 0;

    ForEachMap(spec["ports"], "spec.ports", [&](const Node& p, const FieldPath& path) {
      ServicePort sp;
      sp.name = Str(p["name"], Child(path, "name"));
      sp.protocol = Proto(p["protocol"], Child(path, "protocol"));
      if (Present(p["port"])) {
        sp.port = Port(p["port"], Child(path, "port")).value_or(0);
      } else {
        Error(p, Child(path, "port"), "is required");
      }
      sp.target_port = TargetPort(p["targetPort"], Child(path, "targetPort"));
      sp.node_port = Int(p["nodePort"], Child(path, "nodePort"), 0, 65535, "a port number")
                         .value_or(0);
      s->ports.push_back(std::move(sp));
    });

    s->external_ips = IpList(spec["externalIPs"], "spec.externalIPs", false);
    constexpr absl::string_view kPolicyProblem = "is not a traffic policy (Cluster or Local)";
    // "Global" is the pre-1.14 spelling of Cluster; the API server still takes it.
    s->external_traffic_policy =
        Enum<TrafficPolicy>(spec["externalTrafficPolicy"], "spec.externalTrafficPolicy",
                            {{"Cluster", TrafficPolicy::kCluster},
                             {"Global", TrafficPolicy::kCluster},
                             {"Local", TrafficPolicy::kLocal},
                             {"", TrafficPolicy::kCluster}},
                            kPolicyProblem)
            .value_or(TrafficPolicy::kCluster);
    s->internal_traffic_policy =
        Enum<TrafficPolicy>(spec["internalTrafficPolicy"], "spec.internalTrafficPolicy",
                            {{"Cluster", TrafficPolicy::kCluster},
                             {"Local", TrafficPolicy::kLocal},
                             {"", TrafficPolicy::kCluster}},
                            kPolicyProblem)
            .value_or(TrafficPolicy::kCluster);
    s->session_affinity_client_ip =
        Enum<bool>(spec["sessionAffinity"], "spec.sessionAffinity",
                   {{"None", false}, {"ClientIP", true}, {"", false}},
                   "is not a session affinity (None or ClientIP)")
            .value_or(false);
    const Node affinity = spec["sessionAffinityConfig"];
    if (IsMap(affinity, "spec.sessionAffinityConfig")) {
      const Node client_ip = affinity["clientIP"];
      if (IsMap(client_ip, "spec.sessionAffinityConfig.clientIP")) {
        if (auto t = Int(client_ip["timeoutSeconds"],
                         "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1, 86400,
                         "a number of seconds")) {
          s->affinity_timeout_s = *t;
        }
      }
    }
    s->external_name = Str(spec["externalName"], "spec.externalName");
  }

  // int-or-string: a number must be a port, anything else is a port name.
  std::string TargetPort(const Node& n, const FieldPath& path) {
    if (!Present(n)) return "";
    if (!n.IsScalar()) {
      TypeError(n, path, "a port number or name");
      return "";
    }
    if (ParseInt(n.Scalar())) Port(n, path);
    return n.Scalar();
  }

  void DecodeSlice(const Node& obj, bool v1beta1) {
    EndpointSlice es;
    if (!Meta(obj, &es.meta)) return;
    if (auto it = es.meta.labels.find(kServiceNameLabel); it != es.meta.labels.end()) {
      es.service_name = it->second;
    }
    const Node address_type = obj["addressType"];
    if (!Present(address_type)) {
      Error(obj, "addressType", "is required (IPv4, IPv6 or FQDN)");
    } else {
      es.address_type =
          Enum<std::string>(address_type, "addressType",
                            {{"IPv4", "IPv4"}, {"IPv6", "IPv6"}, {"FQDN", "FQDN"}},
                            "is not an address type (IPv4, IPv6 or FQDN)")
              .value_or("");
    }
    const bool fqdn = es.address_type == "FQDN";

    ForEachMap(obj["endpoints"], "endpoints", [&](const Node& e, const FieldPath& path) {
      es.endpoints.push_back(DecodeEndpoint(e, path, fqdn, v1beta1));
    });
    ForEachMap(obj["ports"], "ports", [&](const Node& p, const FieldPath& path) {
      es.ports.push_back(DecodePort(p, path, false));
    });
    Add(std::move(es), "EndpointSlice", &out_->objects.slices, &slice_index_);
  }

  Endpoint DecodeEndpoint(const Node& e, const FieldPath& path, bool fqdn, bool v1beta1) {
    Endpoint ep;
    const Node addresses = e["addresses"];
    const FieldPath apath = Child(path, "addresses");
    if (!Present(addresses) || (addresses.IsSequence() && addresses.size() == 0)) {
      Error(Present(addresses) ? addresses : e, apath, "is required (at least one address)");
    } else if (IsList(addresses, apath)) {
      int j = 0;
      for (const Node& a : addresses) {
        const FieldPath p = Index(apath, j++);
        ep.addresses.push_back(fqdn ? Str(a, p) : Ip(a, p, false, false));
      }
    }
    const Node conditions = e["conditions"];
    const FieldPath cpath = Child(path, "conditions");
    if (IsMap(conditions, cpath)) {
      ep.conditions.ready = Bool(conditions["ready"], Child(cpath, "ready"));
      ep.conditions.serving = Bool(conditions["serving"], Child(cpath, "serving"));
      ep.conditions.terminating = Bool(conditions["terminating"], Child(cpath, "terminating"));
    }
    ep.node_name = Str(e["nodeName"], Child(path, "nodeName"));
    ep.zone = Str(e["zone"], Child(path, "zone"));
    const Node hints = e["hints"];
    if (IsMap(hints, Child(path, "hints"))) {
      ForEachMap(hints["forZones"], Child(path, "hints.forZones"),
                 [&](const Node& z, const FieldPath& p) {
                   std::string name = Str(z["name"], Child(p, "name"));
                   if (!name.empty()) ep.hint_zones.push_back(std::move(name));
                 });
    }
    // v1beta1 carried node and zone in a topology map before nodeName/zone.
    if (v1beta1) {
      absl::btree_map<std::string, std::string> topology;
      StringMap(e["topology"], Child(path, "topology"), &topology);
      if (auto it = topology.find("kubernetes.io/hostname");
          it != topology.end() && ep.node_name.empty()) {
        ep.node_name = it->second;
      }
      if (auto it = topology.find("topology.kubernetes.io/zone");
          it != topology.end() && ep.zone.empty()) {
        ep.zone = it->second;
      }
    }
    return ep;
  }

  EndpointPort DecodePort(const Node& p, const FieldPath& path, bool port_required) {
    EndpointPort ep;
    if (Present(p["name"])) ep.name = Str(p["name"], Child(path, "name"));
    ep.protocol = Proto(p["protocol"], Child(path, "protocol"));
    if (Present(p["port"])) {
      ep.port = Port(p["port"], Child(path, "port"));
    } else if (port_required) {
      Error(p, Child(path, "port"), "is required");
    }
    return ep;
  }

  void DecodeEndpoints(const Node& obj) {
    Endpoints eps;
    if (!Meta(obj, &eps.meta)) return;
    ForEachMap(obj["subsets"], "subsets", [&](const Node& sub, const FieldPath& path) {
      EndpointsSubset subset;
      subset.addresses = DecodeAddresses(sub["addresses"], Child(path, "addresses"));
      subset.not_ready_addresses =
          DecodeAddresses(sub["notReadyAddresses"], Child(path, "notReadyAddresses"));
      ForEachMap(sub["ports"], Child(path, "ports"), [&](const Node& p, const FieldPath& pp) {
        subset.ports.push_back(DecodePort(p, pp, true));
      });
      eps.subsets.push_back(std::move(subset));
    });
    Add(std::move(eps), "Endpoints", &out_->objects.endpoints, &endpoints_index_);
  }

  std::vector<EndpointAddress> DecodeAddresses(const Node& n, const FieldPath& path) {
    std::vector<EndpointAddress> out;
    ForEachMap(n, path, [&](const Node& a, const FieldPath& p) {
      EndpointAddress addr;
      if (Present(a["ip"])) {
        addr.ip = Ip(a["ip"], Child(p, "ip"), false, false);
      } else {
        Error(a, Child(p, "ip"), "is required");
      }
      addr.node_name = Str(a["nodeName"], Child(p, "nodeName"));
      out.push_back(std::move(addr));
    });
    return out;
  }

  // Same kind and namespace/name twice in one file: the later one wins, as it
  // would with `kubectl apply -f` of the file.
  template <typename T>
  void Add(T obj, absl::string_view kind, std::vector<T>* list,
           absl::flat_hash_map<NamespacedName, size_t>* index) {
    auto [it, inserted] = index->try_emplace(obj.meta.id, list->size());
    if (inserted) {
      list->push_back(std::move(obj));
      return;
    }
    T& previous = (*list)[it->second];
    out_->warnings.push_back(absl::StrCat(obj.meta.source.String(), ": ", obj.meta.id.String(),
                                          ": duplicate ", kind, " (also at ",
                                          previous.meta.source.String(),
                                          "); the later one wins"));
    previous = std::move(obj);
  }

  const std::string file_;
  ParseResult* const out_;
  Context ctx_;
  std::vector<std::string> errors_;
  int error_count_ = 0;
  absl::flat_hash_map<NamespacedName, size_t> service_index_;
  absl::flat_hash_map<NamespacedName, size_t> slice_index_;
  absl::flat_hash_map<NamespacedName, size_t> endpoints_index_;
};

// ------------------------------------------------------------ JSON fallback

bool LooksLikeJson(absl::string_view content) {
  absl::ConsumePrefix(&content, "\xEF\xBB\xBF");  // UTF-8 BOM
  content = absl::StripLeadingAsciiWhitespace(content);
  return absl::StartsWith(content, "{") || absl::StartsWith(content, "[");
}

// nlohmann values become nodes without marks. Scalars keep their text, so
// numbers and bools read the same as from YAML.
Node FromJson(const nlohmann::json& j, int depth, YamlArena* arena, bool* too_deep) {
  if (depth > kMaxJsonDepth) {
    *too_deep = true;
    return arena->Null();
  }
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      Node n = arena->Map();
      for (const auto& [key, value] : j.items()) {
        n.Insert(arena->Scalar(key), FromJson(value, depth + 1, arena, too_deep));
      }
      return n;
    }
    case nlohmann::json::value_t::array: {
      Node n = arena->Sequence();
      for (const auto& value : j) n.Append(FromJson(value, depth + 1, arena, too_deep));
      return n;
    }
    case nlohmann::json::value_t::string:
      return arena->Scalar(j.get_ref<const std::string&>());
    case nlohmann::json::value_t::boolean:
      return arena->Scalar(j.get<bool>() ? "true" : "false");
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      return arena->Scalar(j.dump());
    default:
      return arena->Null();
  }
}

int LineAtByte(absl::string_view content, size_t byte) {
  const absl::string_view before = content.substr(0, std::min(byte, content.size()));
  return 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
}

absl::StatusOr<YamlDocuments> LoadJson(absl::string_view content, absl::string_view file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(content.begin(), content.end());
  } catch (const nlohmann::json::parse_error& e) {
    // what() is "[json.exception.parse_error.101] parse error at line L, column C: why".
    absl::string_view why = e.what();
    if (size_t col = why.find("column "); col != why.npos) {
      if (size_t colon = why.find(": ", col); colon != why.npos) why.remove_prefix(colon + 2);
    }
    const int line = e.byte > 0 ? LineAtByte(content, e.byte - 1) : 1;
    return absl::InvalidArgumentError(absl::StrCat(file, ":", line, ": invalid JSON: ", why));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": invalid JSON: ", e.what()));
  }
  bool too_deep = false;
  YamlDocuments docs;
  docs.push_back(FromJson(j, 0, docs.arena(), &too_deep));
  if (too_deep) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
  }
  return docs;
}

absl::StatusOr<YamlDocuments> LoadDocuments(absl::string_view content, absl::string_view file) {
  absl::StatusOr<YamlDocuments> docs = ParseYamlDocuments(content, file);
  // libyaml (YAML 1.1) turns down some valid JSON (e.g. a tab before a
  // value); only a JSON parser can tell.
  if (docs.ok() || !LooksLikeJson(content)) return docs;
  return LoadJson(content, file);
}

}  // namespace

absl::StatusOr<ParseResult> ParseManifest(std::string_view content_in,
                                          std::string_view filename_in) {
  // This Abseil build's string_view is its own type, not std::string_view.
  const absl::string_view content(content_in.data(), content_in.size());
  const absl::string_view filename(filename_in.data(), filename_in.size());
  // Everything decoded ends up in JSON (kpxctl, admin API, status file),
  // which must be UTF-8. Checking the bytes suffices: libyaml refuses
  // escapes of surrogates or past U+10FFFF, nlohmann::json likewise.
  if (const size_t valid = Utf8ValidPrefix(content); valid != content.size()) {
    const auto line = 1 + std::count(content.begin(), content.begin() + valid, '\n');
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ":", line, ": not valid UTF-8 (byte 0x",
                     absl::Hex(static_cast<uint8_t>(content[valid]), absl::kZeroPad2),
                     "); manifests must be UTF-8"));
  }
  KPX_ASSIGN_OR_RETURN(YamlDocuments docs, LoadDocuments(content, filename));
  ParseResult result;
  Decoder decoder(filename, &result);
  try {
    for (size_t i = 0; i < docs.size(); ++i) decoder.Document(docs[i], static_cast<int>(i));
  } catch (const std::exception& e) {
    // A bug in the decoder (a throwing std:: call) must still cost one
    // file, not the daemon.
    return absl::InternalError(absl::StrCat(filename, ": decoding failed: ", e.what()));
  }
  KPX_RETURN_IF_ERROR(decoder.Finish());
  return result;
}

absl::StatusOr<ObjectSet> DecodeObject(const nlohmann::json& object, const SourceRef& source) {
  ParseResult result;
  Decoder decoder(source.file, &result);
  try {
    bool too_deep = false;
    YamlArena arena;
    const Node root = FromJson(object, 0, &arena, &too_deep);
    if (too_deep) {
      return absl::InvalidArgumentError(
          absl::StrCat(source.file, ": JSON nested deeper than ", kMaxJsonDepth, " levels"));
    }
    decoder.Document(root, source.document);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(source.file, ": decoding failed: ", e.what()));
  }
  if (absl::Status st = decoder.Finish(); !st.ok()) {
    // An API object is not a document of a file: "(document 1)" would only
    // confuse whoever reads the message.
    return absl::InvalidArgumentError(absl::StrReplaceAll(
        st.message(),
        {{absl::StrCat(source.file, " (document ", source.document + 1, ")"), source.file}}));
  }
  return std::move(result.objects);
}

absl::StatusOr<ParseResult> ParseManifestFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open manifest ", path));
  std::string content;
  absl::Status status;
  char buf[64 * 1024];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = absl::ErrnoToStatus(errno, absl::StrCat("cannot read manifest ", path));
      break;
    }
    if (n == 0) break;
    if (content.size() + n > kMaxFileBytes) {
      status = absl::ResourceExhaustedError(
          absl::StrCat("manifest ", path, " is larger than ", kMaxFileBytes >> 20, " MiB"));
      break;
    }
    content.append(buf, n);
  }
  close(fd);
  KPX_RETURN_IF_ERROR(status);
  return ParseManifest(content, path);
}

}  // namespace kpx::controller

// Kubeconfig / in-cluster resolution. Follows client-go's reading of the
// fields: *-data wins over the file it replaces, tokenFile over token, relative
// paths are relative to the kubeconfig's directory, and a CA together with
// insecure-skip-tls-verify is refused rather than silently ignored.
#include "controller/source/kubeconfig.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include <yaml-cpp/yaml.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "controller/base/status_macros.h"

namespace kpx::controller {
namespace {

constexpr size_t kMaxFileBytes = 4 << 20;  // kubeconfigs and PEM bundles are small

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading ", path));
  std::string content = ss.str();
  if (content.size() > kMaxFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is larger than 4 MiB"));
  }
  return content;
}

std::string Dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool Present(const YAML::Node& n) { return n.IsDefined() && !n.IsNull(); }

// Reads a kubeconfig; every message starts with "kubeconfig PATH: FIELD:".
class KubeconfigReader {
 public:
  explicit KubeconfigReader(const std::string& path) : path_(path), dir_(Dir(path)) {}

  absl::StatusOr<ClusterAccess> Read(std::string_view content, std::string_view context_override) {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(content));
    } catch (const YAML::Exception& e) {
      return Error("", absl::StrCat("invalid YAML at line ", e.mark.line + 1, ": ", e.msg));
    }
    if (!Present(root)) return Error("", "the file is empty");
    if (!root.IsMap()) return Error("", "not a kubeconfig (expected a mapping at the top)");

    std::string context_name(context_override);
    if (context_name.empty()) {
      KPX_ASSIGN_OR_RETURN(context_name, Str(root["current-context"], "current-context"));
      if (context_name.empty()) {
        return Error("current-context", "is not set; set it (kubectl config use-context NAME)");
      }
    }
    ClusterAccess access;
    access.origin = absl::StrCat("kubeconfig ", path_, " (context ", context_name, ")");

    KPX_ASSIGN_OR_RETURN(YAML::Node context, Named(root, "contexts", "context", context_name));
    const std::string ctx_path = absl::StrCat("contexts[name=\"", context_name, "\"].context");
    KPX_ASSIGN_OR_RETURN(std::string cluster_name,
                         Str(context["cluster"], Child(ctx_path, "cluster")));
    if (cluster_name.empty()) return Error(Child(ctx_path, "cluster"), "is required");
    KPX_ASSIGN_OR_RETURN(std::string user_name, Str(context["user"], Child(ctx_path, "user")));

    KPX_ASSIGN_OR_RETURN(YAML::Node cluster, Named(root, "clusters", "cluster", cluster_name));
    KPX_RETURN_IF_ERROR(
        ReadCluster(cluster, absl::StrCat("clusters[name=\"", cluster_name, "\"].cluster"),
                    &access));
    if (!user_name.empty()) {
      KPX_ASSIGN_OR_RETURN(YAML::Node user, Named(root, "users", "user", user_name));
      KPX_RETURN_IF_ERROR(
          ReadUser(user, absl::StrCat("users[name=\"", user_name, "\"].user"), &access));
    }
    return access;
  }

 private:
  static std::string Child(absl::string_view path, absl::string_view key) {
    return absl::StrCat(path, ".", key);
  }

  absl::Status Error(absl::string_view field, absl::string_view problem) const {
    if (field.empty()) return absl::InvalidArgumentError(absl::StrCat("kubeconfig ", path_, ": ", problem));
    return absl::InvalidArgumentError(absl::StrCat("kubeconfig ", path_, ": ", field, ": ", problem));
  }

  absl::StatusOr<std::string> Str(const YAML::Node& n, absl::string_view field) const {
    if (!Present(n)) return std::string();
    if (!n.IsScalar()) return Error(field, "expected a string");
    return n.Scalar();
  }

  absl::StatusOr<bool> Bool(const YAML::Node& n, absl::string_view field) const {
    if (!Present(n)) return false;
    bool b = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, b)) {
      return Error(field, "expected true or false");
    }
    return b;
  }

  // The `kind` entry (the map under key `kind`) of the item named `name` in
  // the list `list`, e.g. clusters[name="x"].cluster.
  absl::StatusOr<YAML::Node> Named(const YAML::Node& root, const char* list, const char* kind,
                                   const std::string& name) const {
    const YAML::Node items = root[list];
    if (Present(items) && !items.IsSequence()) return Error(list, "expected a list");
    if (Present(items)) {
      for (const YAML::Node& item : items) {
        if (!item.IsMap() || !Present(item["name"]) || !item["name"].IsScalar() ||
            item["name"].Scalar() != name) {
          continue;
        }
        const YAML::Node body = item[kind];
        if (!Present(body)) return YAML::Node(YAML::NodeType::Map);
        if (!body.IsMap()) {
          return Error(absl::StrCat(list, "[name=\"", name, "\"].", kind), "expected a mapping");
        }
        return body;
      }
    }
    return Error(list, absl::StrCat("no ", kind, " named \"", name, "\""));
  }

  std::string Resolve(const std::string& file) const {
    if (file.empty() || file[0] == '/') return file;
    return absl::StrCat(dir_, "/", file);
  }

  // `name-data` (base64) or else the file `name`; "" when neither is set.
  absl::StatusOr<std::string> Pem(const YAML::Node& parent, absl::string_view path,
                                  const std::string& name) const {
    const std::string data_field = Child(path, name + "-data");
    KPX_ASSIGN_OR_RETURN(std::string data, Str(parent[name + "-data"], data_field));
    std::string pem;
    std::string field = data_field;
    if (!data.empty()) {
      // Kubeconfig base64 is often wrapped over lines.
      data.erase(std::remove_if(data.begin(), data.end(),
                                [](unsigned char c) { return absl::ascii_isspace(c); }),
                 data.end());
      if (!absl::Base64Unescape(data, &pem)) return Error(data_field, "is not valid base64");
    } else {
      field = Child(path, name);
      KPX_ASSIGN_OR_RETURN(std::string file, Str(parent[name], field));
      if (file.empty()) return std::string();
      absl::StatusOr<std::string> content = ReadFile(Resolve(file));
      if (!content.ok()) return Error(field, content.status().message());
      pem = *std::move(content);
    }
    if (!absl::StrContains(pem, "-----BEGIN ")) return Error(field, "is not PEM data");
    return pem;
  }

  absl::Status ReadCluster(const YAML::Node& cluster, const std::string& path,
                           ClusterAccess* access) const {
    KPX_ASSIGN_OR_RETURN(std::string server, Str(cluster["server"], Child(path, "server")));
    if (server.empty()) return Error(Child(path, "server"), "is required");
    if (!absl::StartsWith(server, "https://") && !absl::StartsWith(server, "http://")) {
      return Error(Child(path, "server"),
                   absl::StrCat("\"", server, "\" is not an http:// or https:// URL"));
    }
    access->server = std::string(absl::StripSuffix(server, "/"));
    KPX_ASSIGN_OR_RETURN(access->ca_pem, Pem(cluster, path, "certificate-authority"));
    KPX_ASSIGN_OR_RETURN(access->insecure_skip_tls_verify,
                         Bool(cluster["insecure-skip-tls-verify"],
                              Child(path, "insecure-skip-tls-verify")));
    if (access->insecure_skip_tls_verify && !access->ca_pem.empty()) {
      // client-go refuses this too: the CA would be silently unused.
      return Error(Child(path, "insecure-skip-tls-verify"),
                   "cannot be combined with certificate-authority(-data); remove one");
    }
    return absl::OkStatus();
  }

  absl::Status ReadUser(const YAML::Node& user, const std::string& path,
                        ClusterAccess* access) const {
    for (const char* unsupported : {"exec", "auth-provider"}) {
      if (Present(user[unsupported])) {
        return absl::UnimplementedError(absl::StrCat(
            "kubeconfig ", path_, ": ", Child(path, unsupported),
            ": credential plugins are not supported; use a token, tokenFile or client "
            "certificate"));
      }
    }
    if (Present(user["username"]) || Present(user["password"])) {
      return absl::UnimplementedError(
          absl::StrCat("kubeconfig ", path_, ": ", Child(path, "username"),
                       ": basic authentication is not supported (removed in Kubernetes "
                       "1.19); use a token or client certificate"));
    }
    KPX_ASSIGN_OR_RETURN(access->token, Str(user["token"], Child(path, "token")));
    KPX_ASSIGN_OR_RETURN(std::string token_file, Str(user["tokenFile"], Child(path, "tokenFile")));
    if (!token_file.empty()) {
      access->token_file = Resolve(token_file);
      absl::StatusOr<std::string> t = ReadFile(access->token_file);
      if (!t.ok()) return Error(Child(path, "tokenFile"), t.status().message());
    }
    KPX_ASSIGN_OR_RETURN(access->client_cert_pem, Pem(user, path, "client-certificate"));
    KPX_ASSIGN_OR_RETURN(access->client_key_pem, Pem(user, path, "client-key"));
    if (access->client_cert_pem.empty() != access->client_key_pem.empty()) {
      return Error(Child(path, access->client_cert_pem.empty() ? "client-certificate"
                                                               : "client-key"),
                   access->client_cert_pem.empty()
                       ? "is required with client-key(-data)"
                       : "is required with client-certificate(-data)");
    }
    return absl::OkStatus();
  }

  const std::string path_;
  const std::string dir_;
};

}  // namespace

absl::StatusOr<ClusterAccess> ParseKubeconfig(std::string_view content, const std::string& path,
                                              std::string_view context) {
  try {
    return KubeconfigReader(path).Read(content, context);
  } catch (const std::exception& e) {
    // yaml-cpp throws from accessors on odd shapes; a typo must not abort kpxd.
    return absl::InvalidArgumentError(absl::StrCat("kubeconfig ", path, ": ", e.what()));
  }
}

absl::StatusOr<ClusterAccess> LoadKubeconfig(const std::string& path, std::string_view context) {
  absl::StatusOr<std::string> content = ReadFile(path);
  if (!content.ok()) {
    return absl::Status(content.status().code(),
                        absl::StrCat("kubeconfig: ", content.status().message()));
  }
  return ParseKubeconfig(*content, path, context);
}

absl::StatusOr<ClusterAccess> LoadInCluster(const InClusterPaths& paths) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0' || port == nullptr || *port == '\0') {
    return absl::FailedPreconditionError(
        "not running in a pod (KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT are not "
        "set); pass --kubeconfig or --master");
  }
  ClusterAccess access;
  const std::string h = host;
  access.server = absl::StrCat("https://", absl::StrContains(h, ":") ? "[" + h + "]" : h, ":", port);
  access.origin = "in-cluster service account";
  access.token_file = paths.token;
  absl::StatusOr<std::string> token = ReadFile(paths.token);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrCat("in-cluster config: service-account token: ",
                                     token.status().message()));
  }
  absl::StatusOr<std::string> ca = ReadFile(paths.ca);
  if (!ca.ok()) {
    return absl::Status(ca.status().code(), absl::StrCat("in-cluster config: service-account CA: ",
                                                         ca.status().message()));
  }
  access.ca_pem = *std::move(ca);
  return access;
}

absl::StatusOr<ClusterAccess> ResolveClusterAccess(const std::string& kubeconfig,
                                                   const std::string& master,
                                                   const InClusterPaths& in_cluster) {
  std::string server = master;
  if (!server.empty() && !absl::StrContains(server, "://")) server = "https://" + server;
  if (!server.empty() && !absl::StartsWith(server, "https://") &&
      !absl::StartsWith(server, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--master ", master, ": not an http:// or https:// URL"));
  }
  server = std::string(absl::StripSuffix(server, "/"));
  if (kubeconfig.empty() && server.empty()) return LoadInCluster(in_cluster);
  if (kubeconfig.empty()) {
    ClusterAccess access;
    access.server = server;
    access.origin = absl::StrCat("--master ", server);
    return access;
  }
  KPX_ASSIGN_OR_RETURN(ClusterAccess access, LoadKubeconfig(kubeconfig));
  if (!server.empty()) {
    access.server = server;
    absl::StrAppend(&access.origin, ", server from --master");
  }
  return access;
}

std::string CurrentToken(const ClusterAccess& access, std::string* error) {
  if (!access.token_file.empty()) {
    absl::StatusOr<std::string> t = ReadFile(access.token_file);
    if (t.ok()) {
      std::string token(absl::StripAsciiWhitespace(*t));
      if (!token.empty()) return token;
      // Caught mid-rewrite by a writer that does not rename into place.
      t = absl::FailedPreconditionError(absl::StrCat("token file ", access.token_file, " is empty"));
    }
    if (error != nullptr) *error = std::string(t.status().message());
  }
  return access.token;
}

}  // namespace kpx::controller

// How kpxd reaches the Kubernetes API server: a kubeconfig file (its current
// context), the in-cluster service-account, or a bare --master URL, resolved
// in kube-proxy's order. Errors name the file and the field.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kpx::controller {

// Everything a request needs: where, whom to trust, who we are.
struct ClusterAccess {
  std::string server;           // "https://10.0.0.1:6443" (may carry a path prefix; no trailing '/')
  std::string ca_pem;           // CA bundle (PEM); "" = the system trust store
  bool insecure_skip_tls_verify = false;  // only when the kubeconfig says so
  std::string token;            // bearer token; "" = none
  // Re-read before every request when set (bound service-account tokens
  // rotate under us); its content takes precedence over `token`.
  std::string token_file;
  std::string client_cert_pem;  // client certificate + key (PEM), both or neither
  std::string client_key_pem;
  std::string origin;           // for messages: "kubeconfig /x (context c)", "in-cluster", ...
};

// Parses kubeconfig `content`; `path` names it in messages and anchors
// relative file references (as kubectl does). `context` overrides
// current-context when not empty.
absl::StatusOr<ClusterAccess> ParseKubeconfig(std::string_view content, const std::string& path,
                                              std::string_view context = "");
absl::StatusOr<ClusterAccess> LoadKubeconfig(const std::string& path,
                                             std::string_view context = "");

// The service account kubelet mounts into every pod. Paths are fields so
// tests can point them elsewhere.
struct InClusterPaths {
  std::string token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::string ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
};
// Reads KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT and the files above.
absl::StatusOr<ClusterAccess> LoadInCluster(const InClusterPaths& paths = {});

// kube-proxy's order (cmd/kube-proxy createClient): with --kubeconfig, that
// file, its server replaced by --master when given; with only --master, that
// URL with no credentials (e.g. `kubectl proxy`); with neither, in-cluster.
absl::StatusOr<ClusterAccess> ResolveClusterAccess(const std::string& kubeconfig,
                                                   const std::string& master,
                                                   const InClusterPaths& in_cluster = {});

// The bearer token to send now: token_file's content when it is readable and
// not empty, else `token`. Sets *error when the file could not be used.
std::string CurrentToken(const ClusterAccess& access, std::string* error = nullptr);

}  // namespace kpx::controller

// Kubeconfig / in-cluster / --master resolution: every auth kind, client-go's
// precedence rules (*-data over files, tokenFile over token, relative paths),
// and errors that name the file and the field.
#include "controller/source/kubeconfig.h"

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kCaPem[] = "-----BEGIN CERTIFICATE-----\nQ0EK\n-----END CERTIFICATE-----\n";
constexpr char kCertPem[] = "-----BEGIN CERTIFICATE-----\nQ0VSVAo=\n-----END CERTIFICATE-----\n";
constexpr char kKeyPem[] = "-----BEGIN PRIVATE KEY-----\nS0VZCg==\n-----END PRIVATE KEY-----\n";

class KubeconfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kpx-kubeconfig-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    return path;
  }

  // A kubeconfig with one context "c" -> cluster "k", user "u".
  std::string Config(const std::string& cluster_fields, const std::string& user_fields) {
    return "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
           "contexts:\n- name: other\n  context: {cluster: nowhere, user: nobody}\n"
           "- name: c\n  context:\n    cluster: k\n    user: u\n"
           "clusters:\n- name: k\n  cluster:\n" + cluster_fields +
           "users:\n- name: u\n  user:\n" + user_fields;
  }

  absl::StatusOr<ClusterAccess> Load(const std::string& cluster_fields,
                                     const std::string& user_fields) {
    return LoadKubeconfig(Write("config", Config(cluster_fields, user_fields)));
  }

  std::string dir_;
};

TEST_F(KubeconfigTest, TokenWithCaData) {
  auto a = Load("    server: https://10.0.0.1:6443/\n    certificate-authority-data: " +
                    absl::Base64Escape(kCaPem) + "\n",
                "    token: abc.def\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->server, "https://10.0.0.1:6443");  // trailing '/' dropped
  EXPECT_EQ(a->ca_pem, kCaPem);
  EXPECT_EQ(a->token, "abc.def");
  EXPECT_EQ(CurrentToken(*a), "abc.def");
  EXPECT_FALSE(a->insecure_skip_tls_verify);
  EXPECT_TRUE(a->client_cert_pem.empty());
  EXPECT_THAT(a->origin, HasSubstr("context c"));
}

TEST_F(KubeconfigTest, RelativeFilesAreRelativeToTheKubeconfig) {
  fs::create_directories(dir_ + "/pki");
  Write("pki/ca.crt", kCaPem);
  Write("pki/client.crt", kCertPem);
  Write("pki/client.key", kKeyPem);
  auto a = Load("    server: https://api.example:6443\n    certificate-authority: pki/ca.crt\n",
                "    client-certificate: pki/client.crt\n    client-key: " + dir_ +
                    "/pki/client.key\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ca_pem, kCaPem);
  EXPECT_EQ(a->client_cert_pem, kCertPem);
  EXPECT_EQ(a->client_key_pem, kKeyPem);
  EXPECT_TRUE(a->token.empty());
}

TEST_F(KubeconfigTest, DataWinsOverFile) {
  // The file does not even exist: client-go never reads it when -data is set.
  auto a = Load("    server: https://h\n    certificate-authority: missing.crt\n"
                "    certificate-authority-data: " + absl::Base64Escape(kCaPem) + "\n",
                "    client-certificate: missing.crt\n    client-certificate-data: " +
                    absl::Base64Escape(kCertPem) + "\n    client-key-data: " +
                    absl::Base64Escape(kKeyPem) + "\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->ca_pem, kCaPem);
  EXPECT_EQ(a->client_cert_pem, kCertPem);
  EXPECT_EQ(a->client_key_pem, kKeyPem);
}

TEST_F(KubeconfigTest, TokenFileIsReadAgainOnEveryUse) {
  Write("token", "first\n");
  auto a = Load("    server: https://h\n", "    token: static\n    tokenFile: token\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->token_file, dir_ + "/token");
  EXPECT_EQ(CurrentToken(*a), "first");  // the file wins over `token`, whitespace trimmed
  Write("token", "rotated");
  EXPECT_EQ(CurrentToken(*a), "rotated");
  Write("token", "");  // caught mid-rewrite
  std::string empty_error;
  EXPECT_EQ(CurrentToken(*a, &empty_error), "static");
  EXPECT_THAT(empty_error, HasSubstr("is empty"));
  fs::remove(dir_ + "/token");
  std::string error;
  EXPECT_EQ(CurrentToken(*a, &error), "static");  // unreadable: fall back
  EXPECT_THAT(error, HasSubstr(dir_ + "/token"));
}

TEST_F(KubeconfigTest, InsecureSkipVerifyOnlyWhenSet) {
  auto a = Load("    server: https://h\n    insecure-skip-tls-verify: true\n", "    token: t\n");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->insecure_skip_tls_verify);
  auto b = Load("    server: https://h\n    insecure-skip-tls-verify: false\n", "    token: t\n");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(b->insecure_skip_tls_verify);
}

TEST_F(KubeconfigTest, ContextOverride) {
  const std::string path =
      Write("config", Config("    server: https://main\n", "    token: t\n"));
  auto a = LoadKubeconfig(path, "c");
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = LoadKubeconfig(path, "other");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("clusters: no cluster named \"nowhere\""));
}

TEST_F(KubeconfigTest, NoUserMeansNoCredentials) {
  auto a = ParseKubeconfig(
      "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
      "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:8001'}}]\n",
      "/x/config");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->server, "http://127.0.0.1:8001");
  EXPECT_TRUE(a->token.empty());
}

struct ErrorCase {
  const char* name;
  std::string cluster;
  std::string user;
  std::string want;  // substring of the message, after "kubeconfig PATH: "
};

TEST_F(KubeconfigTest, ErrorsNameFileAndField) {
  const std::vector<ErrorCase> cases = {
      {"no server", "    insecure-skip-tls-verify: true\n", "    token: t\n",
       "clusters[name=\"k\"].cluster.server: is required"},
      {"server not a URL", "    server: 10.0.0.1:6443\n", "    token: t\n",
       "clusters[name=\"k\"].cluster.server: \"10.0.0.1:6443\" is not an http:// or https:// URL"},
      {"bad base64", "    server: https://h\n    certificate-authority-data: '***'\n", "    token: t\n",
       "clusters[name=\"k\"].cluster.certificate-authority-data: is not valid base64"},
      {"not PEM", "    server: https://h\n    certificate-authority-data: aGVsbG8=\n",
       "    token: t\n", "clusters[name=\"k\"].cluster.certificate-authority-data: is not PEM data"},
      {"missing CA file", "    server: https://h\n    certificate-authority: nope.crt\n",
       "    token: t\n", "clusters[name=\"k\"].cluster.certificate-authority: cannot read "},
      {"CA and insecure", "    server: https://h\n    insecure-skip-tls-verify: true\n"
                          "    certificate-authority-data: " + absl::Base64Escape(kCaPem) + "\n",
       "    token: t\n", "insecure-skip-tls-verify: cannot be combined with certificate-authority"},
      {"insecure not a bool", "    server: https://h\n    insecure-skip-tls-verify: maybe\n",
       "    token: t\n", "insecure-skip-tls-verify: expected true or false"},
      {"cert without key", "    server: https://h\n",
       "    client-certificate-data: " + absl::Base64Escape(kCertPem) + "\n",
       "users[name=\"u\"].user.client-key: is required with client-certificate(-data)"},
      {"missing token file", "    server: https://h\n", "    tokenFile: /nonexistent/token\n",
       "users[name=\"u\"].user.tokenFile: cannot read /nonexistent/token"},
      {"exec plugin", "    server: https://h\n", "    exec: {command: aws}\n",
       "users[name=\"u\"].user.exec: credential plugins are not supported"},
      {"basic auth", "    server: https://h\n", "    username: admin\n    password: x\n",
       "users[name=\"u\"].user.username: basic authentication is not supported"},
  };
  for (const ErrorCase& c : cases) {
    auto a = Load(c.cluster, c.user);
    ASSERT_FALSE(a.ok()) << c.name;
    EXPECT_THAT(a.status().message(), HasSubstr("kubeconfig " + dir_ + "/config: ")) << c.name;
    EXPECT_THAT(a.status().message(), HasSubstr(c.want)) << c.name;
  }
}

TEST_F(KubeconfigTest, StructuralErrors) {
  struct Case {
    std::string content;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"", "the file is empty"},
      {"- a\n- b\n", "not a kubeconfig"},
      {"current-context: [\n", "invalid YAML at line"},
      {"clusters: []\n", "current-context: is not set"},
      {"current-context: gone\ncontexts: []\n", "contexts: no context named \"gone\""},
      {"current-context: c\ncontexts: [{name: c, context: {user: u}}]\n",
       "contexts[name=\"c\"].context.cluster: is required"},
      {"current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
       "clusters: [{name: k, cluster: {server: 'https://h'}}]\n",
       "users: no user named \"u\""},
      {"current-context: c\ncontexts: {c: 1}\n", "contexts: expected a list"},
  };
  for (const Case& c : cases) {
    auto a = ParseKubeconfig(c.content, "/etc/kpx/kubeconfig");
    ASSERT_FALSE(a.ok()) << c.content;
    EXPECT_THAT(a.status().message(), HasSubstr("kubeconfig /etc/kpx/kubeconfig: ")) << c.content;
    EXPECT_THAT(a.status().message(), HasSubstr(c.want)) << c.content;
  }
  auto missing = LoadKubeconfig(dir_ + "/absent");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr(dir_ + "/absent"));
}

// Environment variables are process-wide; these tests set and restore them.
class InClusterTest : public KubeconfigTest {
 protected:
  void SetUp() override {
    KubeconfigTest::SetUp();
    paths_.token = Write("token", "sa-token\n");
    paths_.ca = Write("ca.crt", kCaPem);
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  }
  void TearDown() override {
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    KubeconfigTest::TearDown();
  }
  InClusterPaths paths_;
};

TEST_F(InClusterTest, ServiceAccount) {
  auto a = LoadInCluster(paths_);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->server, "https://10.96.0.1:443");
  EXPECT_EQ(a->ca_pem, kCaPem);
  EXPECT_EQ(a->token_file, paths_.token);
  EXPECT_EQ(CurrentToken(*a), "sa-token");

  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  auto v6 = LoadInCluster(paths_);
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->server, "https://[fd00::1]:443");
}

TEST_F(InClusterTest, Errors) {
  InClusterPaths bad = paths_;
  bad.token = dir_ + "/missing-token";
  auto a = LoadInCluster(bad);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("service-account token: cannot read " + bad.token));

  unsetenv("KUBERNETES_SERVICE_PORT");
  auto b = LoadInCluster(paths_);
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("pass --kubeconfig or --master"));
}

TEST_F(InClusterTest, ResolveFollowsKubeProxysOrder) {
  // Neither flag: in-cluster.
  auto in = ResolveClusterAccess("", "", paths_);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->server, "https://10.96.0.1:443");
  EXPECT_EQ(CurrentToken(*in), "sa-token");

  // --master alone: that URL, no credentials; a bare host:port means https.
  auto master = ResolveClusterAccess("", "http://127.0.0.1:8001/", paths_);
  ASSERT_TRUE(master.ok()) << master.status();
  EXPECT_EQ(master->server, "http://127.0.0.1:8001");
  EXPECT_TRUE(CurrentToken(*master).empty());
  EXPECT_TRUE(master->ca_pem.empty());
  auto bare = ResolveClusterAccess("", "api.example:6443", paths_);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->server, "https://api.example:6443");

  // --kubeconfig with --master: the file's credentials, the flag's server.
  const std::string kc = Write("config", Config("    server: https://from-file\n"
                                                "    certificate-authority-data: " +
                                                    absl::Base64Escape(kCaPem) + "\n",
                                                "    token: kc-token\n"));
  auto both = ResolveClusterAccess(kc, "https://override:6443", paths_);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->server, "https://override:6443");
  EXPECT_EQ(both->token, "kc-token");
  EXPECT_EQ(both->ca_pem, kCaPem);
  auto file_only = ResolveClusterAccess(kc, "", paths_);
  ASSERT_TRUE(file_only.ok()) << file_only.status();
  EXPECT_EQ(file_only->server, "https://from-file");

  auto bad = ResolveClusterAccess("", "ftp://x", paths_);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--master ftp://x"));
}

}  // namespace
}  // namespace kpx::controller

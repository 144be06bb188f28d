// Packaging: `cmake --install` into a temporary prefix lays out the binaries,
// the systemd unit (ExecStart rewritten to the prefix), the example flag file
// and the DaemonSet; the flag file and the DaemonSet name only flags kpxd
// knows; the DaemonSet has the RBAC, mounts and probes kpxd needs.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/testlib.h"
#include "yaml-cpp/yaml.h"

namespace kpx {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;

std::string Shell(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    *rc = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = pclose(p);
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string Read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "--metrics-bind-address=..." -> "metrics_bind_address" (gflags' spelling).
std::string FlagName(std::string arg) {
  arg = arg.substr(arg.find_first_not_of('-'));
  arg = arg.substr(0, arg.find('='));
  for (char& c : arg) c = c == '-' ? '_' : c;
  return arg;
}

class PackagingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/kpx-install-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    prefix_ = tmpl;
    install_out_ = Shell("cmake --install " + testing::BinaryPath("") + " --prefix " + prefix_,
                       &install_rc_);
    int rc = 0;
    std::string help = Shell(prefix_ + "/bin/kpxd --helpfull", &rc);
    // gflags lists each flag as "    -name (help) type: ...".
    std::istringstream in(help);
    for (std::string line; std::getline(in, line);) {
      size_t dash = line.find_first_not_of(' ');
      if (dash == std::string::npos || line[dash] != '-') continue;
      flags_.insert(line.substr(dash + 1, line.find(' ', dash) - dash - 1));
    }
  }
  static void TearDownTestSuite() { fs::remove_all(prefix_); }

  static inline std::string prefix_;
  static inline std::string install_out_;
  static inline int install_rc_ = -1;
  static inline std::set<std::string> flags_;
};

TEST_F(PackagingTest, InstallLaysOutBinariesUnitAndExamples) {
  ASSERT_EQ(install_rc_, 0) << install_out_;
  for (const char* bin : {"bin/kpxd", "bin/kpxctl"}) {
    EXPECT_EQ(access((prefix_ + "/" + bin).c_str(), X_OK), 0) << bin;
  }
  for (const char* f : {"lib/systemd/system/kpxd.service", "share/kpx/kpxd.flags",
                        "share/kpx/daemonset.yaml", "share/kpx/examples/flask.yaml",
                        "share/doc/kpx/OPERATIONS.md"}) {
    EXPECT_TRUE(fs::is_regular_file(prefix_ + "/" + f)) << f;
  }
  int rc = 0;
  EXPECT_THAT(Shell(prefix_ + "/bin/kpxctl --help", &rc), HasSubstr("trace"));
  EXPECT_EQ(rc, 0);
  EXPECT_THAT(flags_, Contains("metrics_bind_address"));
}

TEST_F(PackagingTest, SystemdUnitRunsTheInstalledKpxdWithBpfAndNetlink) {
  ASSERT_EQ(install_rc_, 0) << install_out_;
  std::string unit = Read(prefix_ + "/lib/systemd/system/kpxd.service");
  EXPECT_THAT(unit, HasSubstr("\nExecStart=" + prefix_ + "/bin/kpxd --flagfile=/etc/kpx/kpxd.flags\n"));
  EXPECT_THAT(unit, HasSubstr("CAP_BPF"));
  EXPECT_THAT(unit, HasSubstr("CAP_NET_ADMIN"));
  EXPECT_THAT(unit, HasSubstr("ReadWritePaths=/sys/fs/bpf"));
  EXPECT_THAT(unit, HasSubstr("AF_NETLINK"));
  EXPECT_THAT(unit, HasSubstr("RuntimeDirectory=kpx"));
  if (access("/usr/bin/systemd-analyze", X_OK) == 0) {
    int rc = 0;
    std::string out = Shell("systemd-analyze verify " + prefix_ + "/lib/systemd/system/kpxd.service", &rc);
    EXPECT_EQ(rc, 0) << out;
  }
}

TEST_F(PackagingTest, FlagFileNamesOnlyFlagsKpxdKnows) {
  ASSERT_FALSE(flags_.empty());
  std::istringstream in(Read(prefix_ + "/share/kpx/kpxd.flags"));
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("#--", 0) == 0) line = line.substr(1);  // commented-out examples too
    if (line.rfind("--", 0) != 0) continue;
    ++n;
    EXPECT_THAT(flags_, Contains(FlagName(line))) << line;
  }
  EXPECT_GE(n, 10);
}

TEST_F(PackagingTest, DaemonSetHasRbacHostNetworkMountsProbesAndKnownFlags) {
  std::vector<YAML::Node> docs = YAML::LoadAllFromFile(prefix_ + "/share/kpx/daemonset.yaml");
  std::map<std::string, YAML::Node> by_kind;
  for (const YAML::Node& d : docs) by_kind[d["kind"].as<std::string>()] = d;
  for (const char* kind : {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}) {
    ASSERT_TRUE(by_kind.count(kind)) << kind;
  }
  // RBAC: list + watch of services and endpointslices, bound to the SA the pods use.
  std::map<std::string, std::set<std::string>> verbs;
  for (const YAML::Node& rule : by_kind["ClusterRole"]["rules"]) {
    for (const YAML::Node& r : rule["resources"]) {
      for (const YAML::Node& v : rule["verbs"]) verbs[r.as<std::string>()].insert(v.as<std::string>());
    }
  }
  for (const char* res : {"services", "endpointslices", "nodes"}) {
    EXPECT_TRUE(verbs[res].count("list") && verbs[res].count("watch")) << res;
  }
  std::string sa = by_kind["ServiceAccount"]["metadata"]["name"].as<std::string>();
  EXPECT_EQ(by_kind["ClusterRoleBinding"]["subjects"][0]["name"].as<std::string>(), sa);
  EXPECT_EQ(by_kind["ClusterRoleBinding"]["roleRef"]["name"].as<std::string>(),
            by_kind["ClusterRole"]["metadata"]["name"].as<std::string>());

  YAML::Node pod = by_kind["DaemonSet"]["spec"]["template"]["spec"];
  EXPECT_EQ(pod["serviceAccountName"].as<std::string>(), sa);
  EXPECT_TRUE(pod["hostNetwork"].as<bool>());
  YAML::Node c = pod["containers"][0];
  EXPECT_TRUE(c["securityContext"]["privileged"].as<bool>());
  std::map<std::string, std::string> args;
  for (const YAML::Node& a : c["args"]) {
    std::string s = a.as<std::string>();
    EXPECT_THAT(flags_, Contains(FlagName(s))) << s;
    args[FlagName(s)] = s.substr(s.find('=') + 1);
  }
  ASSERT_TRUE(args.count("healthz_bind_address"));
  ASSERT_TRUE(args.count("metrics_bind_address"));
  std::string healthz_port = args["healthz_bind_address"].substr(args["healthz_bind_address"].rfind(':') + 1);
  EXPECT_EQ(healthz_port, "10256");
  EXPECT_THAT(args["metrics_bind_address"], ::testing::EndsWith(":10249"));
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/livez");
  EXPECT_EQ(c["livenessProbe"]["httpGet"]["port"].as<std::string>(), healthz_port);
  EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
  // The admin socket's directory and bpffs come from the host.
  std::map<std::string, std::string> host_paths;  // volume -> host path
  for (const YAML::Node& v : pod["volumes"]) {
    if (v["hostPath"]) host_paths[v["name"].as<std::string>()] = v["hostPath"]["path"].as<std::string>();
  }
  std::map<std::string, std::string> mounts;  // mount path -> host path
  for (const YAML::Node& m : c["volumeMounts"]) {
    mounts[m["mountPath"].as<std::string>()] = host_paths[m["name"].as<std::string>()];
  }
  EXPECT_EQ(mounts["/sys/fs/bpf"], "/sys/fs/bpf");
  std::string sock_dir = fs::path(args["admin_socket"]).parent_path().string();
  EXPECT_EQ(mounts[sock_dir], "/run/kpx");
  EXPECT_EQ(mounts[args["state_dir"]], "/var/lib/kpx");
}

}  // namespace
}  // namespace kpx

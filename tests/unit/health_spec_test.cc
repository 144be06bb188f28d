// HealthSpec: flag defaults, kpx.io/health-* annotation overrides with one
// exact error per bad value (the field keeps its default, nothing else is
// lost), the strictness order, and BuildTargets (ready only, strictest spec).
#include "dataplane/health/health_spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::health {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

using Annotations = absl::btree_map<std::string, std::string>;

ParsedHealthSpec Parse(const Annotations& a) {
  return ParseHealthAnnotations(a, HealthSpec{}, "default/web");
}

TEST(HealthSpecTest, DefaultsGiveTheDocumentedBound) {
  HealthSpec s;
  EXPECT_EQ(s.type, CheckType::kTcp);
  EXPECT_EQ(s.interval, absl::Milliseconds(300));
  EXPECT_EQ(s.timeout, absl::Milliseconds(200));
  EXPECT_EQ(s.rise, 2);
  EXPECT_EQ(s.fall, 2);
  // Worst case death -> Down (see health_spec.h) stays within 1 s and within
  // the fall x interval + timeout.
  const absl::Duration worst = s.interval * (1 + s.jitter) +
                               (s.fall - 1) * std::max(s.suspect_interval, s.timeout) + s.timeout;
  EXPECT_EQ(worst, absl::Milliseconds(760));
  EXPECT_LE(worst, s.fall * s.interval + s.timeout);
  EXPECT_LT(worst, absl::Seconds(1));
  EXPECT_EQ(s.String(), "tcp interval=300ms timeout=200ms rise=2 fall=2");
}

TEST(HealthSpecTest, FlagsStructMatchesSpecDefaults) {
  absl::StatusOr<HealthSpec> s = HealthSpecFromFlags(HealthFlags{});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, HealthSpec{});
}

TEST(HealthSpecTest, FlagsParseAndReject) {
  HealthFlags f;
  f.check = "http";
  f.path = "/healthz";
  f.interval = "1s";
  f.rise = 3;
  auto s = HealthSpecFromFlags(f);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->type, CheckType::kHttp);
  EXPECT_EQ(s->path, "/healthz");
  EXPECT_EQ(s->interval, absl::Seconds(1));
  EXPECT_EQ(s->rise, 3);

  struct Case {
    std::function<void(HealthFlags&)> edit;
    std::string error;
  };
  const Case cases[] = {
      {[](HealthFlags& f) { f.check = "udp"; }, "--health_check=\"udp\": must be one of tcp, http, none"},
      {[](HealthFlags& f) { f.path = "x"; }, "--health_path=\"x\": must start with '/'"},
      {[](HealthFlags& f) { f.interval = "300"; },
       "--health_interval=\"300\": needs a unit, e.g. \"500ms\" or \"2s\""},
      {[](HealthFlags& f) { f.timeout = "0s"; },
       "--health_timeout=\"0s\": must be between 1ms and 1m"},
      {[](HealthFlags& f) { f.down_backoff_max = "400ms"; },
       "--health_down_backoff_max=400ms is below --health_down_backoff=500ms"},
      {[](HealthFlags& f) { f.fall = 0; }, "--health_fall=0: must be an integer from 1 to 100"},
      {[](HealthFlags& f) { f.rise = 101; }, "--health_rise=101: must be an integer from 1 to 100"},
      {[](HealthFlags& f) { f.jitter = 0.9; }, "--health_jitter=0.9: must be between 0 and 0.5"},
  };
  for (const Case& c : cases) {
    HealthFlags bad;
    c.edit(bad);
    auto r = HealthSpecFromFlags(bad);
    ASSERT_FALSE(r.ok()) << c.error;
    EXPECT_EQ(r.status().message(), c.error);
  }
}

TEST(HealthSpecTest, NoAnnotationsKeepDefaults) {
  ParsedHealthSpec p = Parse({{"other.io/x", "y"}, {"kpx.io/lb-algorithm", "maglev"}});
  EXPECT_EQ(p.spec, HealthSpec{});
  EXPECT_THAT(p.errors, IsEmpty());
}

TEST(HealthSpecTest, EveryAnnotationOverrides) {
  ParsedHealthSpec p = Parse({{"kpx.io/health-check", "HTTP"},
                              {"kpx.io/health-path", "/ready?full=1"},
                              {"kpx.io/health-interval", "1.5s"},
                              {"kpx.io/health-timeout", " 50ms "},
                              {"kpx.io/health-rise", "3"},
                              {"kpx.io/health-fall", "1"},
                              {"kpx.io/health-port", "9090"}});
  EXPECT_THAT(p.errors, IsEmpty());
  EXPECT_EQ(p.spec.type, CheckType::kHttp);
  EXPECT_EQ(p.spec.path, "/ready?full=1");
  EXPECT_EQ(p.spec.interval, absl::Milliseconds(1500));
  EXPECT_EQ(p.spec.timeout, absl::Milliseconds(50));
  EXPECT_EQ(p.spec.rise, 3);
  EXPECT_EQ(p.spec.fall, 1);
  EXPECT_EQ(p.spec.port, 9090);
  EXPECT_EQ(p.spec.ProbePort(80), 9090);
  // Node-wide fields are not per-Service.
  EXPECT_EQ(p.spec.suspect_interval, HealthSpec{}.suspect_interval);
  EXPECT_EQ(ParseHealthAnnotations({{"kpx.io/health-check", "none"}}, HealthSpec{}, "a/b").spec.type,
            CheckType::kNone);
}

// Every error message, exactly: the Service, the annotation, the value, why,
// and the default that is used instead.
TEST(HealthSpecTest, EveryBadValueHasAClearErrorAndFallsBack) {
  struct Case {
    std::string key, value, error;
  };
  const Case cases[] = {
      {"kpx.io/health-check", "grpc",
       "Service default/web: annotation kpx.io/health-check=\"grpc\": must be one of tcp, http, "
       "none; using the default tcp"},
      {"kpx.io/health-path", "healthz",
       "Service default/web: annotation kpx.io/health-path=\"healthz\": must start with '/'; "
       "using the default \"/\""},
      {"kpx.io/health-path", "/a b",
       "Service default/web: annotation kpx.io/health-path=\"/a b\": must not contain spaces or "
       "control characters; using the default \"/\""},
      {"kpx.io/health-path", "/a\r\nX-Evil: 1",
       "Service default/web: annotation kpx.io/health-path=\"/a\\x0d\\x0aX-Evil: 1\": must not "
       "contain spaces or control characters; using the default \"/\""},
      {"kpx.io/health-path", "/" + std::string(1024, 'a'),
       "Service default/web: annotation kpx.io/health-path=\"/" + std::string(1024, 'a') +
           "\": must be at most 1024 bytes; using the default \"/\""},
      {"kpx.io/health-interval", "fast",
       "Service default/web: annotation kpx.io/health-interval=\"fast\": not a duration (e.g. "
       "\"500ms\", \"2s\"); using the default 300ms"},
      {"kpx.io/health-interval", "500",
       "Service default/web: annotation kpx.io/health-interval=\"500\": needs a unit, e.g. "
       "\"500ms\" or \"2s\"; using the default 300ms"},
      {"kpx.io/health-interval", "1ms",
       "Service default/web: annotation kpx.io/health-interval=\"1ms\": must be between 10ms and "
       "1h; using the default 300ms"},
      {"kpx.io/health-interval", "-1s",
       "Service default/web: annotation kpx.io/health-interval=\"-1s\": must not be negative; "
       "using the default 300ms"},
      {"kpx.io/health-interval", "",
       "Service default/web: annotation kpx.io/health-interval=\"\": not a duration (e.g. "
       "\"500ms\", \"2s\"); using the default 300ms"},
      {"kpx.io/health-timeout", "2m",
       "Service default/web: annotation kpx.io/health-timeout=\"2m\": must be between 1ms and 1m; "
       "using the default 200ms"},
      {"kpx.io/health-timeout", "inf",
       "Service default/web: annotation kpx.io/health-timeout=\"inf\": not a duration (e.g. "
       "\"500ms\", \"2s\"); using the default 200ms"},
      {"kpx.io/health-rise", "0",
       "Service default/web: annotation kpx.io/health-rise=\"0\": must be an integer from 1 to "
       "100; using the default 2"},
      {"kpx.io/health-rise", "two",
       "Service default/web: annotation kpx.io/health-rise=\"two\": must be an integer from 1 to "
       "100; using the default 2"},
      {"kpx.io/health-fall", "1000",
       "Service default/web: annotation kpx.io/health-fall=\"1000\": must be an integer from 1 to "
       "100; using the default 2"},
      {"kpx.io/health-port", "70000",
       "Service default/web: annotation kpx.io/health-port=\"70000\": must be a port number from "
       "1 to 65535; using the default (the backend's port)"},
      {"kpx.io/health-port", "http",
       "Service default/web: annotation kpx.io/health-port=\"http\": must be a port number from 1 "
       "to 65535; using the default (the backend's port)"},
      {"kpx.io/health-intreval", "1s",
       "Service default/web: unknown annotation kpx.io/health-intreval (known: "
       "kpx.io/health-check, kpx.io/health-path, kpx.io/health-interval, kpx.io/health-timeout, "
       "kpx.io/health-rise, kpx.io/health-fall, kpx.io/health-port); ignored"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key + "=" + c.value);
    // A good override next to the bad one survives: only the bad field falls back.
    Annotations a = {{c.key, c.value}};
    const bool override_fall = c.key != "kpx.io/health-fall";
    if (override_fall) a["kpx.io/health-fall"] = "3";
    if (c.key == "kpx.io/health-path") a["kpx.io/health-check"] = "http";
    ParsedHealthSpec p = Parse(a);
    EXPECT_THAT(p.errors, ElementsAre(c.error));
    HealthSpec want;
    if (override_fall) want.fall = 3;
    if (c.key == "kpx.io/health-path") want.type = CheckType::kHttp;
    EXPECT_EQ(p.spec, want);
  }
}

TEST(HealthSpecTest, PathWithoutHttpIsReported) {
  ParsedHealthSpec p = Parse({{"kpx.io/health-path", "/healthz"}});
  EXPECT_THAT(p.errors, ElementsAre("Service default/web: annotation kpx.io/health-path has no "
                                    "effect with kpx.io/health-check=tcp (set it to http)"));
  EXPECT_EQ(p.spec.type, CheckType::kTcp);
}

TEST(HealthSpecTest, SeveralErrorsAllReported) {
  ParsedHealthSpec p = Parse({{"kpx.io/health-interval", "x"}, {"kpx.io/health-rise", "-1"}});
  EXPECT_EQ(p.errors.size(), 2u);
  EXPECT_EQ(p.spec, HealthSpec{});
}

TEST(HealthSpecTest, StricterIsATotalOrderAndNoneIsLast) {
  HealthSpec fast;
  fast.interval = absl::Milliseconds(100);
  HealthSpec slow;
  slow.interval = absl::Seconds(5);
  HealthSpec none;
  none.type = CheckType::kNone;
  none.interval = absl::Milliseconds(10);
  EXPECT_TRUE(StricterThan(fast, slow));
  EXPECT_FALSE(StricterThan(slow, fast));
  EXPECT_TRUE(StricterThan(slow, none));
  HealthSpec a;
  HealthSpec b;
  b.path = "/x";  // differs only in a tie-break field
  EXPECT_NE(StricterThan(a, b), StricterThan(b, a));
  EXPECT_FALSE(StricterThan(a, a));
}

TEST(HealthSpecTest, ParseHealthDuration) {
  EXPECT_EQ(*ParseHealthDuration("500ms"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseHealthDuration("1.5s"), absl::Milliseconds(1500));
  EXPECT_EQ(*ParseHealthDuration("0"), absl::ZeroDuration());
  EXPECT_FALSE(ParseHealthDuration("5").ok());
  EXPECT_FALSE(ParseHealthDuration("ms").ok());
  EXPECT_FALSE(ParseHealthDuration("-5ms").ok());
}

// ---------------------------------------------------------------- BuildTargets

controller::ServiceRule Rule(const std::string& name, const std::string& vip,
                             std::vector<controller::Backend> backends, Annotations annotations = {},
                             controller::Protocol proto = controller::Protocol::kTCP) {
  controller::ServiceRule r;
  r.service.service = {"default", name};
  r.service.port = "http";
  r.service.protocol = proto;
  r.frontend = {*Ipv4::Parse(vip), 80, proto};
  r.backends = std::move(backends);
  r.annotations = std::move(annotations);
  return r;
}

controller::Backend B(const std::string& ip, uint16_t port, bool ready = true) {
  controller::Backend b;
  b.ip = *Ipv4::Parse(ip);
  b.port = port;
  b.ready = ready;
  b.serving = true;
  b.terminating = !ready;
  return b;
}

controller::ServiceTable Table(std::vector<controller::ServiceRule> rules) {
  controller::ServiceTable t;
  for (auto& r : rules) t.emplace(r.frontend, std::move(r));
  return t;
}

std::vector<std::string> Addrs(const HealthTargets& t) {
  std::vector<std::string> out;
  for (const HealthTarget& x : t.targets) {
    out.push_back(x.backend.ip.ToString() + ":" + std::to_string(x.backend.port));
  }
  return out;
}

TEST(BuildTargetsTest, OnlyReadyBackendsOnceEach) {
  auto table = Table({
      Rule("web", "10.96.0.1", {B("10.244.1.2", 8080), B("10.244.1.3", 8080, /*ready=*/false)}),
      // Same backend again through another frontend of the same Service.
      Rule("web", "10.96.0.2", {B("10.244.1.2", 8080)}),
      // Only serving-terminating endpoints (the graceful fallback): never probed.
      Rule("old", "10.96.0.3", {B("10.244.9.9", 80, false)}),
  });
  HealthTargets t = BuildTargets(table, HealthSpec{});
  EXPECT_THAT(Addrs(t), ElementsAre("10.244.1.2:8080"));
  EXPECT_THAT(t.errors, IsEmpty());
  EXPECT_EQ(t.targets[0].service, "default/web");
  EXPECT_EQ(t.targets[0].spec, HealthSpec{});
}

TEST(BuildTargetsTest, SortedAndDistinctPorts) {
  auto table = Table({Rule("a", "10.96.0.1",
                           {B("10.244.2.1", 80), B("10.244.1.9", 81), B("10.244.1.9", 80)})});
  EXPECT_THAT(Addrs(BuildTargets(table, HealthSpec{})),
              ElementsAre("10.244.1.9:80", "10.244.1.9:81", "10.244.2.1:80"));
}

TEST(BuildTargetsTest, NoneSkipsAndStrictestWinsDeterministically) {
  const Annotations slow = {{"kpx.io/health-interval", "2s"}};
  const Annotations fast = {{"kpx.io/health-interval", "100ms"}, {"kpx.io/health-check", "http"}};
  const Annotations none = {{"kpx.io/health-check", "none"}};
  auto t1 = Table({
      Rule("slow", "10.96.0.1", {B("10.244.1.2", 80), B("10.244.1.3", 80)}, slow),
      Rule("fast", "10.96.0.2", {B("10.244.1.2", 80)}, fast),
      Rule("off", "10.96.0.3", {B("10.244.1.2", 80), B("10.244.1.4", 80)}, none),
  });
  // The same rules with the Services' frontends swapped: same answer.
  auto t2 = Table({
      Rule("slow", "10.96.0.3", {B("10.244.1.2", 80), B("10.244.1.3", 80)}, slow),
      Rule("fast", "10.96.0.1", {B("10.244.1.2", 80)}, fast),
      Rule("off", "10.96.0.2", {B("10.244.1.2", 80), B("10.244.1.4", 80)}, none),
  });
  for (const auto* table : {&t1, &t2}) {
    HealthTargets t = BuildTargets(*table, HealthSpec{});
    // 10.244.1.4 is only behind a "none" Service: not probed.
    ASSERT_THAT(Addrs(t), ElementsAre("10.244.1.2:80", "10.244.1.3:80"));
    EXPECT_EQ(t.targets[0].service, "default/fast");
    EXPECT_EQ(t.targets[0].spec.interval, absl::Milliseconds(100));
    EXPECT_EQ(t.targets[0].spec.type, CheckType::kHttp);
    EXPECT_EQ(t.targets[1].service, "default/slow");
    EXPECT_EQ(t.targets[1].spec.interval, absl::Seconds(2));
  }
  EXPECT_EQ(BuildTargets(t1, HealthSpec{}), BuildTargets(t2, HealthSpec{}));
}

TEST(BuildTargetsTest, EqualSpecsPickTheSmallerServiceName) {
  auto table = Table({Rule("zeta", "10.96.0.1", {B("10.244.1.2", 80)}),
                      Rule("alpha", "10.96.0.2", {B("10.244.1.2", 80)})});
  EXPECT_EQ(BuildTargets(table, HealthSpec{}).targets[0].service, "default/alpha");
}

TEST(BuildTargetsTest, ErrorsOncePerServiceAndBackendsKept) {
  const Annotations bad = {{"kpx.io/health-fall", "zero"}};
  auto table = Table({Rule("web", "10.96.0.1", {B("10.244.1.2", 80)}, bad),
                      Rule("web", "10.96.0.2", {B("10.244.1.2", 80)}, bad)});
  HealthTargets t = BuildTargets(table, HealthSpec{});
  EXPECT_THAT(t.errors, ElementsAre("Service default/web: annotation kpx.io/health-fall=\"zero\": "
                                    "must be an integer from 1 to 100; using the default 2"));
  ASSERT_THAT(Addrs(t), ElementsAre("10.244.1.2:80"));
  EXPECT_EQ(t.targets[0].spec.fall, 2);
}

TEST(BuildTargetsTest, NonTcpOnlyWithExplicitHealthPort) {
  auto table = Table({
      Rule("dns", "10.96.0.10", {B("10.244.1.5", 53)}, {}, controller::Protocol::kUDP),
      Rule("dns2", "10.96.0.11", {B("10.244.1.6", 53)}, {{"kpx.io/health-port", "8080"}},
           controller::Protocol::kUDP),
  });
  HealthTargets t = BuildTargets(table, HealthSpec{});
  ASSERT_THAT(Addrs(t), ElementsAre("10.244.1.6:53"));
  EXPECT_EQ(t.targets[0].spec.ProbePort(53), 8080);
}

TEST(BuildTargetsTest, DefaultsFromFlagsApply) {
  HealthSpec defaults;
  defaults.type = CheckType::kNone;  // --health_check=none: opt-in per Service
  auto table = Table({Rule("a", "10.96.0.1", {B("10.244.1.2", 80)}),
                      Rule("b", "10.96.0.2", {B("10.244.1.3", 80)}, {{"kpx.io/health-check", "tcp"}})});
  EXPECT_THAT(Addrs(BuildTargets(table, defaults)), ElementsAre("10.244.1.3:80"));
}

}  // namespace
}  // namespace kpx::health

// MetricsText: the exposition kpxd's /metrics serves must parse as Prometheus
// text: HELP/TYPE once per family, escaped label values, histogram series
// with cumulative buckets, +Inf, _sum and _count.
#include "controller/base/prometheus_text.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx {
namespace {

using ::testing::HasSubstr;

TEST(PrometheusTextTest, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(PromEscapeLabelValue(R"(a"b\c)" "\nd"), R"(a\"b\\c\nd)");
  EXPECT_EQ(PromEscapeHelp("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
  MetricsText m;
  m.Family("kpx_test_total", "Help with a\nnewline", MetricsText::Type::kCounter);
  m.Add({{"service", "default/we\"ird\\name\n"}}, 3);
  EXPECT_EQ(m.Render(),
            "# HELP kpx_test_total Help with a\\nnewline\n"
            "# TYPE kpx_test_total counter\n"
            "kpx_test_total{service=\"default/we\\\"ird\\\\name\\n\"} 3\n");
}

TEST(PrometheusTextTest, FormatsValues) {
  EXPECT_EQ(PromFormatValue(0), "0");
  EXPECT_EQ(PromFormatValue(18446744073709.0), "18446744073709");
  EXPECT_EQ(PromFormatValue(0.25), "0.25");
  EXPECT_EQ(PromFormatValue(0.001), "0.001");
  EXPECT_EQ(PromFormatValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(PromFormatValue(1e300 * 1e300), "+Inf");
  EXPECT_EQ(PromFormatValue(-1e300 * 1e300), "-Inf");
  EXPECT_EQ(PromFormatValue(std::nan("")), "NaN");
}

TEST(PrometheusTextTest, FamiliesAppearOnceWithTheirSamplesTogether) {
  MetricsText m;
  m.Family("a_total", "A", MetricsText::Type::kCounter);
  m.Add({{"x", "1"}}, 1);
  m.Family("b", "B", MetricsText::Type::kGauge);
  m.Add({}, 2);
  m.Family("a_total", "ignored", MetricsText::Type::kCounter);  // back to a_total
  m.Add({{"x", "2"}}, 5);
  std::string text = m.Render();
  EXPECT_EQ(text,
            "# HELP a_total A\n# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"2\"} 5\n"
            "# HELP b B\n# TYPE b gauge\nb 2\n");
}

TEST(PrometheusTextTest, HistogramIsCumulativeWithInfSumAndCount) {
  PromHistogram h(PromExponentialBuckets(0.001, 2, 3));  // 0.001 0.002 0.004
  h.Observe(0.0005);
  h.Observe(0.002);  // on a bound: counts in that bucket (le = less or equal)
  h.Observe(0.003);
  h.Observe(10);
  MetricsText m;
  m.Family("kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
           MetricsText::Type::kHistogram);
  m.AddHistogram({}, h);
  EXPECT_EQ(m.Render(),
            "# HELP kubeproxy_sync_proxy_rules_duration_seconds SyncProxyRules latency in seconds\n"
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n"
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 1\n"
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 2\n"
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 3\n"
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"} 4\n"
            "kubeproxy_sync_proxy_rules_duration_seconds_sum 10.0055\n"
            "kubeproxy_sync_proxy_rules_duration_seconds_count 4\n");
}

TEST(PrometheusTextTest, HistogramKeepsOtherLabelsBeforeLe) {
  PromHistogram h({1});
  h.Observe(2);
  MetricsText m;
  m.Family("h", "H", MetricsText::Type::kHistogram);
  m.AddHistogram({{"svc", "a"}}, h);
  EXPECT_THAT(m.Render(), HasSubstr("h_bucket{svc=\"a\",le=\"1\"} 0\nh_bucket{svc=\"a\",le=\"+Inf\"} 1\n"
                                    "h_sum{svc=\"a\"} 2\nh_count{svc=\"a\"} 1\n"));
}

TEST(PrometheusTextTest, KubeProxyBucketHelpers) {
  EXPECT_THAT(PromExponentialBuckets(0.001, 2, 15),
              ::testing::ElementsAre(0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
                                     0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384));
  EXPECT_THAT(PromLinearBuckets(60, 5, 3), ::testing::ElementsAre(60, 65, 70));
}

TEST(PrometheusTextTest, ValidatesNames) {
  EXPECT_TRUE(PromValidMetricName("kubeproxy_sync_proxy_rules_duration_seconds"));
  EXPECT_TRUE(PromValidMetricName("a:b"));
  EXPECT_FALSE(PromValidMetricName("1abc"));
  EXPECT_FALSE(PromValidMetricName("a-b"));
  EXPECT_FALSE(PromValidMetricName(""));
  EXPECT_TRUE(PromValidLabelName("le"));
  EXPECT_FALSE(PromValidLabelName("a:b"));
  EXPECT_FALSE(PromValidLabelName("__name__"));
}

}  // namespace
}  // namespace kpx

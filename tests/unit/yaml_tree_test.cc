// YamlNode trees from yaml-cpp's events: what the manifest decoder relies on
// (types, nulls, marks, lookups, anchors) and what the builder refuses.
#include "controller/yaml_tree.h"

#include <yaml-cpp/exceptions.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

using ::testing::HasSubstr;

std::vector<YamlNode> Parse(absl::string_view text) {
  absl::StatusOr<std::vector<YamlNode>> docs = ParseYamlDocuments(text, "t.yaml");
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs.ok() ? *docs : std::vector<YamlNode>{};
}

TEST(YamlTree, MapsSequencesScalarsAndMarks) {
  auto docs = Parse("kind: Service\nspec:\n  ports:\n  - port: 80\n    name: http\n  - port: 443\n");
  ASSERT_EQ(docs.size(), 1u);
  const YamlNode& root = docs[0];
  ASSERT_TRUE(root.IsMap());
  EXPECT_EQ(root["kind"].Scalar(), "Service");
  EXPECT_FALSE(root["nope"].IsDefined());
  EXPECT_FALSE(root["kind"]["x"].IsDefined());  // not a map: undefined, no throw
  const YamlNode ports = root["spec"]["ports"];
  ASSERT_TRUE(ports.IsSequence());
  ASSERT_EQ(ports.size(), 2u);
  EXPECT_EQ(ports.items()[1]["port"].Scalar(), "443");
  EXPECT_EQ(ports.items()[1]["port"].Mark().line, 5);  // 0-based, as yaml-cpp's
  EXPECT_EQ(root["spec"].pairs().size(), 1u);
  EXPECT_EQ(root["spec"].pairs()[0].first.Scalar(), "ports");
  int n = 0;
  for (const YamlNode& p : ports) n += p.IsMap();
  EXPECT_EQ(n, 2);
}

TEST(YamlTree, NullsAreNullAndQuotedNullIsAString) {
  auto docs = Parse("a: ~\nb: null\nc:\nd: 'null'\ne: \"\"\n");
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_TRUE(docs[0]["a"].IsNull());
  EXPECT_TRUE(docs[0]["b"].IsNull());
  EXPECT_TRUE(docs[0]["c"].IsNull());
  EXPECT_TRUE(docs[0]["d"].IsScalar());
  EXPECT_EQ(docs[0]["d"].Scalar(), "null");
  EXPECT_TRUE(docs[0]["e"].IsScalar());
  EXPECT_EQ(docs[0]["a"].Scalar(), "");  // not a scalar: empty text
}

TEST(YamlTree, DuplicateKeysFindTheFirst) {
  auto docs = Parse("a: 1\na: 2\n");
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0]["a"].Scalar(), "1");
  EXPECT_EQ(docs[0].size(), 2u);
}

TEST(YamlTree, AnchorsAreSharedAndACycleIsRefused) {
  auto docs = Parse("base: &b {port: 80}\nuse: *b\n");
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0]["use"]["port"].Scalar(), "80");
  EXPECT_EQ(docs[0]["use"].id(), docs[0]["base"].id());
  try {
    absl::StatusOr<std::vector<YamlNode>> cyc = ParseYamlDocuments("a: &x {b: *x}\n", "t.yaml");
    ADD_FAILURE() << "an alias inside its own anchor was accepted";
  } catch (const YAML::Exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("contains it"));
  }
}

TEST(YamlTree, DocumentsAndTheLoopingInputIsAnError) {
  auto docs = Parse("a: 1\n---\nb: 2\n...\n---\n");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[1]["b"].Scalar(), "2");
  EXPECT_FALSE(docs[2].IsMap());
  // yaml-cpp 0.7 reports empty documents forever after a stray ",": the
  // second "document" does not start at a "---", so it is an error.
  absl::StatusOr<std::vector<YamlNode>> bad = ParseYamlDocuments(",\n", "t.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("t.yaml:1: invalid YAML: unexpected \",\""));
}

TEST(YamlTree, BuiltByHandForJson) {
  YamlNode m = YamlNode::Map();
  m.Insert(YamlNode::Scalar("k"), YamlNode::Scalar("v"));
  YamlNode s = YamlNode::Sequence();
  s.Append(m);
  EXPECT_EQ(s.items()[0]["k"].Scalar(), "v");
  EXPECT_EQ(s.items()[0].Mark().line, -1);
  EXPECT_FALSE(YamlNode().IsDefined());
  EXPECT_TRUE(YamlNode::Null().IsNull());
}

}  // namespace
}  // namespace kpx::controller

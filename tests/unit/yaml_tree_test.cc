// YamlNode trees from libyaml's events: what the manifest decoder relies on
// (types, nulls, marks, lookups, anchors), what the builder refuses, and the
// same trees as yaml-cpp (the parser it replaced) on every manifest we have.
#include "controller/yaml_tree.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

using ::testing::HasSubstr;

YamlDocuments Parse(absl::string_view text) {
  absl::StatusOr<YamlDocuments> docs = ParseYamlDocuments(text, "t.yaml");
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs.ok() ? std::move(*docs) : YamlDocuments();
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
  absl::StatusOr<YamlDocuments> cyc = ParseYamlDocuments("a: &x {b: *x}\n", "t.yaml");
  ASSERT_FALSE(cyc.ok());
  EXPECT_EQ(cyc.status().message(), "t.yaml:1: invalid YAML: alias *x to a node that contains it");
  absl::StatusOr<YamlDocuments> unknown = ParseYamlDocuments("a: 1\nb: *nope\n", "t.yaml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(), "t.yaml:2: invalid YAML: alias *nope to an unknown anchor");
  // A redefined anchor: aliases after it see the new value.
  auto redef = Parse("a: &x 1\nb: *x\nc: &x 2\nd: *x\n");
  ASSERT_EQ(redef.size(), 1u);
  EXPECT_EQ(redef[0]["b"].Scalar(), "1");
  EXPECT_EQ(redef[0]["d"].Scalar(), "2");
}

TEST(YamlTree, SyntaxErrorsNameTheLineAndWhatWasBeingParsed) {
  absl::StatusOr<YamlDocuments> bad =
      ParseYamlDocuments("apiVersion: v1\nkind: Service\nmetadata: {name: web\n", "svc.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "svc.yaml:4: invalid YAML: did not find expected ',' or '}' (while parsing a flow "
            "mapping started at line 3)");
  bad = ParseYamlDocuments("a: 1\n b: 2\n", "svc.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("svc.yaml:2: invalid YAML: mapping values are not allowed"));
}

TEST(YamlTree, NestingPastTheLimitIsAnError) {
  const std::string ok = std::string(kMaxYamlDepth, '[') + std::string(kMaxYamlDepth, ']');
  EXPECT_EQ(Parse(ok).size(), 1u);
  const std::string deep = "a: " + std::string(kMaxYamlDepth + 1, '[') +
                           std::string(kMaxYamlDepth + 1, ']') + "\n";
  absl::StatusOr<YamlDocuments> bad = ParseYamlDocuments(deep, "t.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr(absl::StrCat("t.yaml:1: invalid YAML: nested deeper than ", kMaxYamlDepth)));
}

TEST(YamlTree, Documents) {
  auto docs = Parse("a: 1\n---\nb: 2\n...\n---\n");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[1]["b"].Scalar(), "2");
  EXPECT_TRUE(docs[2].IsNull());
  EXPECT_TRUE(Parse("").empty());
  EXPECT_TRUE(Parse("# only a comment\n").empty());
  // The input that made yaml-cpp 0.7 report empty documents forever.
  absl::StatusOr<YamlDocuments> bad = ParseYamlDocuments(",\n", "t.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("t.yaml:1: invalid YAML: "));
}

// A tree as text: type, line:column, content. Shared (anchored) nodes print
// in full wherever they are used.
std::string Dump(const YamlNode& n) {
  if (!n.IsDefined()) return "undefined";
  std::string out = absl::StrCat(n.Mark().line, ":", n.Mark().column);
  if (n.IsNull()) return absl::StrCat(out, "~");
  if (n.IsScalar()) return absl::StrCat(out, "'", n.Scalar(), "'");
  if (n.IsSequence()) {
    absl::StrAppend(&out, "[");
    for (const YamlNode& item : n) absl::StrAppend(&out, Dump(item), ",");
    return absl::StrCat(out, "]");
  }
  absl::StrAppend(&out, "{");
  for (const YamlNode::Pair& p : n.pairs()) {
    absl::StrAppend(&out, Dump(p.first), "=", Dump(p.second), ",");
  }
  return absl::StrCat(out, "}");
}

// The same from yaml-cpp's LoadAll (what kpx parsed with before). A null
// node's mark is left out: yaml-cpp puts an empty value ("key:") where the
// next token starts, libyaml right after the ":"; the decoder never reports
// a line for a null value it did not expect (it names the key's line).
std::string DumpYamlCpp(const YAML::Node& n, bool parent_mark = true) {
  std::string out = parent_mark ? absl::StrCat(n.Mark().line, ":", n.Mark().column) : "";
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "~";
    case YAML::NodeType::Scalar:
      return absl::StrCat(out, "'", n.Scalar(), "'");
    case YAML::NodeType::Sequence:
      absl::StrAppend(&out, "[");
      for (const YAML::Node& item : n) absl::StrAppend(&out, DumpYamlCpp(item), ",");
      return absl::StrCat(out, "]");
    case YAML::NodeType::Map:
      absl::StrAppend(&out, "{");
      for (const auto& p : n) {
        absl::StrAppend(&out, DumpYamlCpp(p.first), "=", DumpYamlCpp(p.second), ",");
      }
      return absl::StrCat(out, "}");
    default:
      return "undefined";
  }
}

std::string StripNullMarks(std::string dump) {
  // "12:3~" -> "~"
  std::string out;
  for (size_t i = 0; i < dump.size(); ++i) {
    if (dump[i] == '~') {
      while (!out.empty() && (std::isdigit(static_cast<unsigned char>(out.back())) ||
                              out.back() == ':')) {
        out.pop_back();
      }
    }
    out += dump[i];
  }
  return out;
}

void ExpectSameAsYamlCpp(const std::string& text, const std::string& what) {
  absl::StatusOr<YamlDocuments> ours = ParseYamlDocuments(text, what);
  ASSERT_TRUE(ours.ok()) << what << ": " << ours.status();
  const std::vector<YAML::Node> ref = YAML::LoadAll(text);
  ASSERT_EQ(ours->size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i) {
    // A scalar's or null's quoting does not survive a dump; compare the
    // documents' text, with null marks removed on our side too.
    std::string mine = StripNullMarks(Dump((*ours)[i]));
    std::string theirs = DumpYamlCpp(ref[i]);
    EXPECT_EQ(mine, theirs) << what << " document " << i + 1;
  }
}

TEST(YamlTree, SameTreesAsYamlCppOnEveryManifestInTheTree) {
  int files = 0;
  for (const char* dir : {"config/examples", "tests/fuzz/corpus/manifest_fuzz",
                          "tests/unit/testdata/parser", "tests/unit/testdata/render"}) {
    for (const auto& entry :
         std::filesystem::directory_iterator(std::filesystem::path(KPX_SOURCE_DIR) / dir)) {
      std::ifstream in(entry.path());
      std::stringstream ss;
      ss << in.rdbuf();
      ExpectSameAsYamlCpp(ss.str(), entry.path().string());
      ++files;
    }
  }
  EXPECT_GE(files, 15);
}

TEST(YamlTree, SameTreesAsYamlCppOnTheConstructsManifestsUse) {
  const std::vector<std::string> cases = {
      // block and flow collections, nesting, comments
      "a: 1\nb:\n  c: [1, 2, {d: e}]\n  f:\n  - g\n  - h: i\n    j: k\n# end\n",
      "- a\n-   - b\n    - c\n- {x: y, z: [1]}\n",
      "{\"kind\": \"Service\", \"spec\": {\"ports\": [{\"port\": 80}, {\"port\": 443}]}}\n",
      // scalars: quoting, escapes, block scalars, multi-line plain
      "a: 'it''s'\nb: \"tab\\there \\u00e9\"\nc: |\n  line1\n  line2\nd: >-\n  folded\n  text\n",
      "a: plain\n  continued\nb: \"x\\\n  y\"\nc: |+\n  keep\n\n",
      "a: 10.96.0.1\nb: 0x1F\nc: 1e3\nd: true\ne: ''\nf: \"\"\n",
      // nulls and tags
      "a: ~\nb: null\nc: Null\nd: NULL\ne:\nf: !!str null\ng: !!int 5\nh: 'null'\n",
      "a: {b: , c: ~}\nd: [~, null, '']\n",
      // anchors, aliases, documents, complex keys, unicode
      "base: &b {port: 80}\nuse: *b\nlist: [*b, *b]\n",
      "---\na: 1\n...\n---\nb: 2\n---\n- c\n",
      "? complex\n: value\n? [a, b]\n: seq-key\n",
      "name: \"caf\u00c3\u00a9\"\nlabels: {\"app.kubernetes.io/name\": \"web\"}\n",
      "%YAML 1.1\n---\na: b\n",
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    ExpectSameAsYamlCpp(cases[i], absl::StrCat("case ", i));
  }
}

// Where the two differ, libyaml agrees with kubectl's parser (go-yaml, a
// port of libyaml): a lone "-" value starts a block sequence, which is not
// allowed there. yaml-cpp read it as the string "-".
TEST(YamlTree, ALoneDashValueIsRefusedAsKubectlDoes) {
  absl::StatusOr<YamlDocuments> bad = ParseYamlDocuments("a: 1\ng: -\n", "t.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "t.yaml:2: invalid YAML: block sequence entries are not allowed in this context");
  EXPECT_EQ(Parse("g: '-'\n")[0]["g"].Scalar(), "-");
}

TEST(YamlTree, BuiltByHandForJson) {
  YamlArena arena;
  YamlNode m = arena.Map();
  m.Insert(arena.Scalar("k"), arena.Scalar("v"));
  YamlNode s = arena.Sequence();
  s.Append(m);
  EXPECT_EQ(s.items()[0]["k"].Scalar(), "v");
  EXPECT_EQ(s.items()[0].Mark().line, -1);
  EXPECT_FALSE(YamlNode().IsDefined());
  EXPECT_TRUE(arena.Null().IsNull());
}

}  // namespace
}  // namespace kpx::controller

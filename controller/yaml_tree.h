// A read-only YAML document tree built straight from libyaml's parser events.
//
// Why not yaml-cpp (YAML::LoadAll): kpxd parses every manifest at start (10k
// Services are 10k files), and yaml-cpp's scanner was most of kpxd's cold
// start: its bare event pass over 10k generated manifests took 1.6 s where
// libyaml's takes 0.36 s (4.6x), and LoadAll 2.5 s. LoadAll also never ends
// on some malformed input (jbeder/yaml-cpp#1319). libyaml is the reference C
// implementation (PyYAML's and Ruby's); building the tree in its one event
// pass does the work once, and lookups here are plain vector scans.
//
// The accessors mirror the subset of YAML::Node the manifest decoder uses
// (with the same meaning: a missing key is an undefined node, parser null
// scalars are null, marks give the line), so its error messages are
// unchanged.
#ifndef KPX_CONTROLLER_YAML_TREE_H_
#define KPX_CONTROLLER_YAML_TREE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <yaml-cpp/mark.h>
#include <yaml-cpp/node/type.h>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kpx::controller {

class YamlNode {
 public:
  struct Data;
  using Pair = std::pair<YamlNode, YamlNode>;

  YamlNode() = default;  // undefined: a key that is not there
  static YamlNode Null(const YAML::Mark& mark = YAML::Mark::null_mark());
  static YamlNode Scalar(std::string value, const YAML::Mark& mark = YAML::Mark::null_mark());
  static YamlNode Map(const YAML::Mark& mark = YAML::Mark::null_mark());
  static YamlNode Sequence(const YAML::Mark& mark = YAML::Mark::null_mark());

  bool IsDefined() const { return d_ != nullptr; }
  YAML::NodeType::value Type() const;
  bool IsNull() const { return Type() == YAML::NodeType::Null; }
  bool IsScalar() const { return Type() == YAML::NodeType::Scalar; }
  bool IsMap() const { return Type() == YAML::NodeType::Map; }
  bool IsSequence() const { return Type() == YAML::NodeType::Sequence; }
  // Where the node starts; null_mark() (line -1) when not from YAML text.
  YAML::Mark Mark() const;
  // The scalar's text; empty for anything else.
  const std::string& Scalar() const;

  // Map: the value of the first scalar key equal to `key`; undefined when
  // there is none or this is not a map.
  YamlNode operator[](absl::string_view key) const;
  // Sequence items (empty for anything else), and a map's pairs in order.
  const std::vector<YamlNode>& items() const;
  const std::vector<Pair>& pairs() const;
  std::vector<YamlNode>::const_iterator begin() const { return items().begin(); }
  std::vector<YamlNode>::const_iterator end() const { return items().end(); }
  size_t size() const;
  // Identity: nodes that share one anchored value have the same id.
  const void* id() const { return d_.get(); }

  // Building (the tree builder and JSON conversion only).
  void Append(YamlNode item);
  void Insert(YamlNode key, YamlNode value);

 private:
  explicit YamlNode(std::shared_ptr<Data> d) : d_(std::move(d)) {}
  std::shared_ptr<Data> d_;
};

// Deeper nesting is refused (the tree is freed recursively).
inline constexpr size_t kMaxYamlDepth = 512;

// Every document of `content`, in order. Errors are
// "<file>:<line>: invalid YAML: <libyaml's problem> (<what it was parsing>
// started at line N)"; an alias to an unknown anchor or to a node that
// contains it, and nesting past kMaxYamlDepth, are errors too. Nothing throws.
absl::StatusOr<std::vector<YamlNode>> ParseYamlDocuments(absl::string_view content,
                                                         absl::string_view file);

}  // namespace kpx::controller

#endif  // KPX_CONTROLLER_YAML_TREE_H_

// A read-only YAML document tree built straight from yaml-cpp's parser events.
//
// Why not YAML::LoadAll: kpxd parses every manifest at start (10k Services are
// 10k files), and LoadAll cost 1.4x a bare event pass on a typical manifest;
// worse, its loop never ends on some malformed input (jbeder/yaml-cpp#1319),
// so the parser ran a second, checking event pass first. Building the tree in
// the one pass that also checks document starts does the work once, and
// lookups here are plain vector scans instead of yaml-cpp's node memory.
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

// Every document of `content`, in order. A document start that does not
// follow a "---" (or a "...") after the previous document is refused with
// "<file>:<line>: invalid YAML: unexpected ..." instead of looping; yaml-cpp's
// syntax errors come back as YAML::Exception (the caller words them).
absl::StatusOr<std::vector<YamlNode>> ParseYamlDocuments(absl::string_view content,
                                                         absl::string_view file);

}  // namespace kpx::controller

#endif  // KPX_CONTROLLER_YAML_TREE_H_

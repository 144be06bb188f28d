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
// unchanged. Nodes live in an arena per parsed text and are plain pointers:
// with one shared_ptr per node, allocating, reference-counting and freeing
// nodes cost as much as libyaml's own parse after it (10k manifests: tree
// 60 ms over libyaml's 200 ms of CPU).
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

class YamlArena;

// A node of a tree owned by a YamlArena: a pointer-sized handle, valid while
// the arena lives. Copies are free (no reference count): the manifest
// decoder copies nodes at every lookup.
class YamlNode {
 public:
  struct Data;
  using Pair = std::pair<YamlNode, YamlNode>;

  YamlNode() = default;  // undefined: a key that is not there

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
  const void* id() const { return d_; }

  // Building (the tree builder and JSON conversion only).
  void Append(YamlNode item);
  void Insert(YamlNode key, YamlNode value);
  void SetItems(const std::vector<YamlNode>& items);  // replaces a sequence's items
  void SetPairs(const std::vector<Pair>& pairs);      // replaces a map's pairs

 private:
  friend class YamlArena;
  explicit YamlNode(Data* d) : d_(d) {}
  Data* d_ = nullptr;
};

// Owns nodes: allocated in chunks, freed together (a manifest's tree is
// built once, read once, dropped). Not thread-safe; not movable (nodes
// point into it), hence held by pointer.
class YamlArena {
 public:
  // `expected_nodes`: the first chunk's size (the tree builder guesses it
  // from the text's length); later chunks double.
  explicit YamlArena(size_t expected_nodes = 64);
  ~YamlArena();
  YamlArena(const YamlArena&) = delete;
  YamlArena& operator=(const YamlArena&) = delete;

  YamlNode Null(const YAML::Mark& mark = YAML::Mark::null_mark());
  YamlNode Scalar(std::string value, const YAML::Mark& mark = YAML::Mark::null_mark());
  YamlNode Map(const YAML::Mark& mark = YAML::Mark::null_mark());
  YamlNode Sequence(const YAML::Mark& mark = YAML::Mark::null_mark());

 private:
  struct Chunk {
    YamlNode::Data* nodes;  // raw storage: only the first `used` are constructed
    size_t used;
    size_t capacity;
  };
  YamlNode::Data* New(YAML::NodeType::value type, const YAML::Mark& mark);
  std::vector<Chunk> chunks_;
  size_t next_capacity_;
};

// The documents of one YAML text and the arena that holds them.
class YamlDocuments {
 public:
  explicit YamlDocuments(size_t expected_nodes = 64) : arena_(std::make_unique<YamlArena>(expected_nodes)) {}
  YamlArena* arena() const { return arena_.get(); }
  void push_back(YamlNode doc) { docs_.push_back(doc); }
  size_t size() const { return docs_.size(); }
  bool empty() const { return docs_.empty(); }
  const YamlNode& operator[](size_t i) const { return docs_[i]; }
  std::vector<YamlNode>::const_iterator begin() const { return docs_.begin(); }
  std::vector<YamlNode>::const_iterator end() const { return docs_.end(); }

 private:
  std::unique_ptr<YamlArena> arena_;
  std::vector<YamlNode> docs_;
};

// Deeper nesting is refused.
inline constexpr size_t kMaxYamlDepth = 512;

// Every document of `content`, in order. Errors are
// "<file>:<line>: invalid YAML: <libyaml's problem> (<what it was parsing>
// started at line N)"; an alias to an unknown anchor or to a node that
// contains it, and nesting past kMaxYamlDepth, are errors too. Nothing throws.
absl::StatusOr<YamlDocuments> ParseYamlDocuments(absl::string_view content, absl::string_view file);

}  // namespace kpx::controller

#endif  // KPX_CONTROLLER_YAML_TREE_H_

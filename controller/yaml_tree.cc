#include "controller/yaml_tree.h"

#include <yaml.h>

#include <algorithm>
#include <memory>
#include <new>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kpx::controller {

struct YamlNode::Data {
  YAML::NodeType::value type = YAML::NodeType::Null;
  YAML::Mark mark = YAML::Mark::null_mark();
  std::string scalar;
  std::vector<YamlNode> items;
  std::vector<Pair> pairs;
};

namespace {

const std::string& EmptyString() {
  static const std::string* const empty = new std::string();
  return *empty;
}
const std::vector<YamlNode>& NoItems() {
  static const std::vector<YamlNode>* const none = new std::vector<YamlNode>();
  return *none;
}
const std::vector<YamlNode::Pair>& NoPairs() {
  static const std::vector<YamlNode::Pair>* const none = new std::vector<YamlNode::Pair>();
  return *none;
}

}  // namespace

YamlArena::YamlArena(size_t expected_nodes) : next_capacity_(std::clamp<size_t>(expected_nodes, 16, 4096)) {}

YamlArena::~YamlArena() {
  for (Chunk& c : chunks_) {
    std::destroy_n(c.nodes, c.used);
    std::allocator<YamlNode::Data>().deallocate(c.nodes, c.capacity);
  }
}

YamlNode::Data* YamlArena::New(YAML::NodeType::value type, const YAML::Mark& mark) {
  if (chunks_.empty() || chunks_.back().used == chunks_.back().capacity) {
    const size_t cap = next_capacity_;
    next_capacity_ = std::min<size_t>(cap * 2, 4096);
    chunks_.push_back(Chunk{std::allocator<YamlNode::Data>().allocate(cap), 0, cap});
  }
  Chunk& c = chunks_.back();
  YamlNode::Data* d = new (&c.nodes[c.used]) YamlNode::Data();
  ++c.used;
  d->type = type;
  d->mark = mark;
  return d;
}

YamlNode YamlArena::Null(const YAML::Mark& mark) { return YamlNode(New(YAML::NodeType::Null, mark)); }
YamlNode YamlArena::Scalar(std::string value, const YAML::Mark& mark) {
  YamlNode::Data* d = New(YAML::NodeType::Scalar, mark);
  d->scalar = std::move(value);
  return YamlNode(d);
}
YamlNode YamlArena::Map(const YAML::Mark& mark) { return YamlNode(New(YAML::NodeType::Map, mark)); }
YamlNode YamlArena::Sequence(const YAML::Mark& mark) {
  return YamlNode(New(YAML::NodeType::Sequence, mark));
}

YAML::NodeType::value YamlNode::Type() const {
  return d_ == nullptr ? YAML::NodeType::Undefined : d_->type;
}
YAML::Mark YamlNode::Mark() const { return d_ == nullptr ? YAML::Mark::null_mark() : d_->mark; }
const std::string& YamlNode::Scalar() const { return IsScalar() ? d_->scalar : EmptyString(); }

YamlNode YamlNode::operator[](absl::string_view key) const {
  if (!IsMap()) return YamlNode();
  for (const Pair& p : d_->pairs) {
    if (p.first.IsScalar() && p.first.d_->scalar == key) return p.second;
  }
  return YamlNode();
}

const std::vector<YamlNode>& YamlNode::items() const {
  return IsSequence() ? d_->items : NoItems();
}
const std::vector<YamlNode::Pair>& YamlNode::pairs() const {
  return IsMap() ? d_->pairs : NoPairs();
}
size_t YamlNode::size() const {
  if (IsSequence()) return d_->items.size();
  if (IsMap()) return d_->pairs.size();
  return 0;
}

void YamlNode::Append(YamlNode item) { d_->items.push_back(item); }
void YamlNode::SetItems(const std::vector<YamlNode>& items) { d_->items.assign(items.begin(), items.end()); }
void YamlNode::SetPairs(const std::vector<Pair>& pairs) { d_->pairs.assign(pairs.begin(), pairs.end()); }
void YamlNode::Insert(YamlNode key, YamlNode value) { d_->pairs.emplace_back(key, value); }

namespace {

YAML::Mark MarkOf(const yaml_mark_t& m) {
  YAML::Mark mark;
  mark.pos = static_cast<int>(m.index);
  mark.line = static_cast<int>(m.line);
  mark.column = static_cast<int>(m.column);
  return mark;
}

absl::string_view AnchorOf(const yaml_char_t* anchor) {
  return anchor == nullptr ? absl::string_view() : reinterpret_cast<const char*>(anchor);
}

// The scalars YAML's core schema reads as null when written plain and
// untagged (the same set yaml-cpp turns into null nodes).
bool IsPlainNull(const yaml_event_t& ev) {
  if (ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE || ev.data.scalar.tag != nullptr) {
    return false;
  }
  const absl::string_view v(reinterpret_cast<const char*>(ev.data.scalar.value),
                            ev.data.scalar.length);
  return v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL";
}

// libyaml's parser with the tree built from its events: one pass, no
// intermediate document object. Anchored nodes are shared; an alias to a node
// that is still open (one that contains the alias) is refused: it would make a
// cycle.
class TreeBuilder {
 public:
  TreeBuilder(absl::string_view content, absl::string_view file) : content_(content), file_(file) {
    yaml_parser_initialize(&parser_);
    yaml_parser_set_input_string(&parser_, reinterpret_cast<const unsigned char*>(content.data()),
                                 content.size());
  }
  ~TreeBuilder() { yaml_parser_delete(&parser_); }
  TreeBuilder(const TreeBuilder&) = delete;
  TreeBuilder& operator=(const TreeBuilder&) = delete;

  absl::StatusOr<YamlDocuments> Run() {
    // ~1 node per 8 bytes of a typical manifest.
    YamlDocuments docs(content_.size() / 8 + 16);
    arena_ = docs.arena();
    for (;;) {
      yaml_event_t ev;
      if (!yaml_parser_parse(&parser_, &ev)) return SyntaxError();
      absl::Status st = Handle(ev, &docs);
      const bool end = ev.type == YAML_STREAM_END_EVENT;
      yaml_event_delete(&ev);
      if (!st.ok()) return st;
      if (end) return docs;
    }
  }

 private:
  // An open collection. Its children gather in a buffer kept per depth (so
  // buffers are reused across siblings) and move into the node, at their
  // exact size, when it closes.
  struct Frame {
    YamlNode node;
    YamlNode key;  // a map's key waiting for its value
    bool has_key = false;
  };
  struct Children {
    std::vector<YamlNode> items;
    std::vector<YamlNode::Pair> pairs;
  };

  absl::Status Handle(const yaml_event_t& ev, YamlDocuments* docs) {
    const YAML::Mark mark = MarkOf(ev.start_mark);
    switch (ev.type) {
      case YAML_DOCUMENT_START_EVENT:
        root_ = YamlNode();
        stack_.clear();
        for (Children& c : children_) {
          c.items.clear();
          c.pairs.clear();
        }
        anchors_.clear();  // anchors do not cross documents
        return absl::OkStatus();
      case YAML_DOCUMENT_END_EVENT:
        docs->push_back(root_.IsDefined() ? root_ : arena_->Null(mark));
        return absl::OkStatus();
      case YAML_SCALAR_EVENT: {
        YamlNode node = IsPlainNull(ev)
                            ? arena_->Null(mark)
                            : arena_->Scalar(std::string(reinterpret_cast<const char*>(ev.data.scalar.value),
                                                         ev.data.scalar.length),
                                             mark);
        Register(ev.data.scalar.anchor, node);
        Attach(node);
        return absl::OkStatus();
      }
      case YAML_ALIAS_EVENT: {
        const auto it = anchors_.find(AnchorOf(ev.data.alias.anchor));
        if (it == anchors_.end()) {
          return Error(mark, absl::StrCat("alias *", AnchorOf(ev.data.alias.anchor),
                                          " to an unknown anchor"));
        }
        for (const Frame& f : stack_) {
          if (f.node.id() == it->second.id()) {
            return Error(mark, absl::StrCat("alias *", it->first, " to a node that contains it"));
          }
        }
        Attach(it->second);
        return absl::OkStatus();
      }
      case YAML_SEQUENCE_START_EVENT:
        return Open(arena_->Sequence(mark), ev.data.sequence_start.anchor, mark);
      case YAML_MAPPING_START_EVENT:
        return Open(arena_->Map(mark), ev.data.mapping_start.anchor, mark);
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        Close();
        return absl::OkStatus();
      default:  // stream start/end, no-op
        return absl::OkStatus();
    }
  }

  void Register(const yaml_char_t* anchor, YamlNode node) {
    if (anchor != nullptr) anchors_[AnchorOf(anchor)] = node;  // a redefinition wins
  }
  absl::Status Open(YamlNode node, const yaml_char_t* anchor, const YAML::Mark& mark) {
    if (stack_.size() >= kMaxYamlDepth) {
      return Error(mark, absl::StrCat("nested deeper than ", kMaxYamlDepth, " levels"));
    }
    Register(anchor, node);
    stack_.push_back(Frame{node, YamlNode(), false});
    if (children_.size() < stack_.size()) children_.emplace_back();
    return absl::OkStatus();
  }
  void Close() {
    if (stack_.empty()) return;
    YamlNode node = stack_.back().node;
    Children& c = children_[stack_.size() - 1];
    // In one go: the node's vectors get their exact size.
    if (node.IsSequence()) {
      node.SetItems(c.items);
    } else {
      node.SetPairs(c.pairs);
    }
    c.items.clear();
    c.pairs.clear();
    stack_.pop_back();
    Attach(node);
  }
  void Attach(YamlNode node) {
    if (stack_.empty()) {
      root_ = node;
      return;
    }
    Frame& parent = stack_.back();
    Children& c = children_[stack_.size() - 1];
    if (parent.node.IsSequence()) {
      c.items.push_back(node);
    } else if (!parent.has_key) {
      parent.key = node;
      parent.has_key = true;
    } else {
      c.pairs.emplace_back(parent.key, node);
      parent.key = YamlNode();
      parent.has_key = false;
    }
  }

  absl::Status Error(const YAML::Mark& mark, absl::string_view why) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ":", mark.line + 1, ": invalid YAML: ", why));
  }
  // libyaml's own words: the problem, where it was, and what it was parsing
  // ("did not find expected ',' or '}' (while parsing a flow mapping started
  // at line 3)").
  absl::Status SyntaxError() const {
    if (parser_.error == YAML_MEMORY_ERROR) {
      return absl::ResourceExhaustedError(absl::StrCat(file_, ": out of memory parsing YAML"));
    }
    std::string why = parser_.problem != nullptr ? parser_.problem : "syntax error";
    if (parser_.problem_value != -1 && parser_.error == YAML_READER_ERROR) {
      absl::StrAppend(&why, " (byte 0x", absl::Hex(parser_.problem_value, absl::kZeroPad2), ")");
    }
    if (parser_.context != nullptr) {
      absl::StrAppend(&why, " (", parser_.context, " started at line ",
                      parser_.context_mark.line + 1, ")");
    }
    YAML::Mark mark = MarkOf(parser_.problem_mark);
    if (parser_.error == YAML_READER_ERROR) {  // the reader gives a byte offset, no mark
      const size_t at = std::min(parser_.problem_offset, content_.size());
      mark.line = static_cast<int>(std::count(content_.begin(), content_.begin() + at, '\n'));
    }
    return Error(mark, why);
  }

  absl::string_view content_;
  absl::string_view file_;
  yaml_parser_t parser_;
  YamlArena* arena_ = nullptr;
  YamlNode root_;
  std::vector<Frame> stack_;
  std::vector<Children> children_;  // [depth]: the open collection's children so far
  absl::flat_hash_map<std::string, YamlNode> anchors_;
};

}  // namespace

absl::StatusOr<YamlDocuments> ParseYamlDocuments(absl::string_view content, absl::string_view file) {
  TreeBuilder builder(content, file);
  return builder.Run();
}

}  // namespace kpx::controller

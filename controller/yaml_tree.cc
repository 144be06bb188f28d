#include "controller/yaml_tree.h"

#include <yaml.h>

#include <algorithm>

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

YamlNode YamlNode::Null(const YAML::Mark& mark) {
  auto d = std::make_shared<Data>();
  d->mark = mark;
  return YamlNode(std::move(d));
}
YamlNode YamlNode::Scalar(std::string value, const YAML::Mark& mark) {
  auto d = std::make_shared<Data>();
  d->type = YAML::NodeType::Scalar;
  d->mark = mark;
  d->scalar = std::move(value);
  return YamlNode(std::move(d));
}
YamlNode YamlNode::Map(const YAML::Mark& mark) {
  auto d = std::make_shared<Data>();
  d->type = YAML::NodeType::Map;
  d->mark = mark;
  return YamlNode(std::move(d));
}
YamlNode YamlNode::Sequence(const YAML::Mark& mark) {
  auto d = std::make_shared<Data>();
  d->type = YAML::NodeType::Sequence;
  d->mark = mark;
  return YamlNode(std::move(d));
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

void YamlNode::Append(YamlNode item) { d_->items.push_back(std::move(item)); }
void YamlNode::Insert(YamlNode key, YamlNode value) {
  d_->pairs.emplace_back(std::move(key), std::move(value));
}

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

  absl::StatusOr<std::vector<YamlNode>> Run() {
    std::vector<YamlNode> docs;
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
  struct Frame {
    YamlNode node;
    YamlNode key;  // a map's key waiting for its value
    bool has_key = false;
  };

  absl::Status Handle(const yaml_event_t& ev, std::vector<YamlNode>* docs) {
    const YAML::Mark mark = MarkOf(ev.start_mark);
    switch (ev.type) {
      case YAML_DOCUMENT_START_EVENT:
        root_ = YamlNode();
        stack_.clear();
        anchors_.clear();  // anchors do not cross documents
        return absl::OkStatus();
      case YAML_DOCUMENT_END_EVENT:
        docs->push_back(root_.IsDefined() ? root_ : YamlNode::Null(mark));
        return absl::OkStatus();
      case YAML_SCALAR_EVENT: {
        YamlNode node = IsPlainNull(ev)
                            ? YamlNode::Null(mark)
                            : YamlNode::Scalar(std::string(reinterpret_cast<const char*>(
                                                               ev.data.scalar.value),
                                                           ev.data.scalar.length),
                                               mark);
        Register(ev.data.scalar.anchor, node);
        Attach(std::move(node));
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
        return Open(YamlNode::Sequence(mark), ev.data.sequence_start.anchor, mark);
      case YAML_MAPPING_START_EVENT:
        return Open(YamlNode::Map(mark), ev.data.mapping_start.anchor, mark);
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        Close();
        return absl::OkStatus();
      default:  // stream start/end, no-op
        return absl::OkStatus();
    }
  }

  void Register(const yaml_char_t* anchor, const YamlNode& node) {
    if (anchor != nullptr) anchors_[AnchorOf(anchor)] = node;  // a redefinition wins
  }
  absl::Status Open(YamlNode node, const yaml_char_t* anchor, const YAML::Mark& mark) {
    if (stack_.size() >= kMaxYamlDepth) {
      return Error(mark, absl::StrCat("nested deeper than ", kMaxYamlDepth, " levels"));
    }
    Register(anchor, node);
    stack_.push_back(Frame{std::move(node), YamlNode(), false});
    return absl::OkStatus();
  }
  void Close() {
    if (stack_.empty()) return;
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    Attach(std::move(f.node));
  }
  void Attach(YamlNode node) {
    if (stack_.empty()) {
      root_ = std::move(node);
      return;
    }
    Frame& parent = stack_.back();
    if (parent.node.IsSequence()) {
      parent.node.Append(std::move(node));
    } else if (!parent.has_key) {
      parent.key = std::move(node);
      parent.has_key = true;
    } else {
      parent.node.Insert(std::move(parent.key), std::move(node));
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
  YamlNode root_;
  std::vector<Frame> stack_;
  absl::flat_hash_map<std::string, YamlNode> anchors_;
};

}  // namespace

absl::StatusOr<std::vector<YamlNode>> ParseYamlDocuments(absl::string_view content,
                                                         absl::string_view file) {
  TreeBuilder builder(content, file);
  return builder.Run();
}

}  // namespace kpx::controller

#include "controller/yaml_tree.h"

#include <sstream>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

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

// One document's tree from the parser's events. Anchored nodes are shared
// (as yaml-cpp's own builder does); an alias to a node that is still open,
// i.e. one that contains the alias, is refused: it would make a cycle.
class TreeBuilder : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { doc_mark_ = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Add(YamlNode::Null(mark), anchor);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (anchor == 0 || anchor > anchors_.size() || !anchors_[anchor - 1].IsDefined()) {
      throw YAML::ParserException(mark, "alias to an unknown anchor");
    }
    const YamlNode& target = anchors_[anchor - 1];
    for (const Frame& f : stack_) {
      if (f.node.id() == target.id()) {
        throw YAML::ParserException(mark, "alias to a node that contains it");
      }
    }
    Add(target, 0);
  }
  void OnScalar(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t anchor,
                const std::string& value) override {
    Add(YamlNode::Scalar(value, mark), anchor);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(YamlNode::Sequence(mark), anchor);
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Open(YamlNode::Map(mark), anchor);
  }
  void OnMapEnd() override { Close(); }

  const YAML::Mark& doc_mark() const { return doc_mark_; }
  YamlNode root() const { return root_; }

 private:
  struct Frame {
    YamlNode node;
    YamlNode key;  // a map's key waiting for its value
    bool has_key = false;
  };

  void Register(const YamlNode& node, YAML::anchor_t anchor) {
    if (anchor == 0) return;
    if (anchors_.size() < anchor) anchors_.resize(anchor);
    anchors_[anchor - 1] = node;
  }
  void Add(YamlNode node, YAML::anchor_t anchor) {
    Register(node, anchor);
    Attach(std::move(node));
  }
  void Open(YamlNode node, YAML::anchor_t anchor) {
    Register(node, anchor);
    stack_.push_back(Frame{std::move(node), YamlNode(), false});
  }
  void Close() {
    if (stack_.empty()) return;
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    if (f.has_key) f.node.Insert(std::move(f.key), YamlNode::Null());  // "key:" with nothing
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

  YAML::Mark doc_mark_ = YAML::Mark::null_mark();
  YamlNode root_;
  std::vector<Frame> stack_;
  std::vector<YamlNode> anchors_;
};

}  // namespace

namespace {

// A quoted excerpt for messages.
std::string QuoteText(absl::string_view v) {
  constexpr size_t kMax = 64;
  return absl::StrCat("\"", absl::CHexEscape(v.substr(0, kMax)), v.size() > kMax ? "...\"" : "\"");
}

bool StartsDocument(absl::string_view content, int pos) {
  if (pos < 0 || static_cast<size_t>(pos) >= content.size()) return false;
  const absl::string_view rest = content.substr(pos);
  if (absl::StartsWith(rest, "---") || absl::StartsWith(rest, "%")) return true;
  return absl::EndsWith(absl::StripTrailingAsciiWhitespace(content.substr(0, pos)), "...");
}

}  // namespace

absl::StatusOr<std::vector<YamlNode>> ParseYamlDocuments(absl::string_view content,
                                                         absl::string_view file) {
  std::istringstream in{std::string(content)};
  YAML::Parser parser(in);
  std::vector<YamlNode> docs;
  int last_pos = -1;
  for (int doc = 0;; ++doc) {
    TreeBuilder builder;
    if (!parser.HandleNextDocument(builder)) return docs;
    // yaml-cpp 0.7 reports empty documents forever, consuming nothing, after
    // some malformed input (a stray "}"): every real document after the first
    // starts at a "---" (or follows "..."), further on than the one before.
    const YAML::Mark& mark = builder.doc_mark();
    if (doc > 0 && (mark.pos <= last_pos || !StartsDocument(content, mark.pos))) {
      absl::string_view text = content.substr(std::min<size_t>(mark.pos, content.size()));
      text = text.substr(0, text.find('\n'));
      return absl::InvalidArgumentError(
          absl::StrCat(file, ":", mark.line + 1, ": invalid YAML: unexpected ", QuoteText(text),
                       " after the end of a document (a new document starts with \"---\")"));
    }
    last_pos = mark.pos;
    docs.push_back(builder.root());
  }
}

}  // namespace kpx::controller

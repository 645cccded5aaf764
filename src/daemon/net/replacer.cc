#include "daemon/net/replacer.h"

#include <string.h>  // memmem (GNU)

#include <algorithm>

namespace sandboxd::net {

namespace {
constexpr size_t kNone = std::string_view::npos;
}  // namespace

Replacer::Replacer(std::vector<std::pair<std::string, std::string>> from_to)
    : counts_(from_to.size(), 0) {
  for (size_t i = 0; i < from_to.size(); ++i) {
    auto& [from, to] = from_to[i];
    if (from.empty()) continue;
    bool dup = std::any_of(needles_.begin(), needles_.end(),
                           [&](const Needle& n) { return n.from == from; });
    if (dup) continue;
    max_len_ = std::max(max_len_, from.size());
    needles_.push_back(Needle{std::move(from), std::move(to), i});
  }
  next_.resize(needles_.size());
}

// Position of needle `i` in data[from, ...) starting before `cutoff`, or kNone.
size_t Replacer::Find(std::string_view data, size_t i, size_t from, size_t cutoff) const {
  const std::string& n = needles_[i].from;
  if (from >= cutoff) return kNone;
  // Only matches that start before the cutoff count; stop the haystack there.
  size_t end = std::min(data.size(), cutoff - 1 + n.size());
  if (end < from + n.size()) return kNone;
  // glibc's memmem (two-way with a shift table) is several GB/s on the
  // needles we see (48-byte placeholders, token-sized values).
  const void* hit = ::memmem(data.data() + from, end - from, n.data(), n.size());
  return hit ? static_cast<const char*>(hit) - data.data() : kNone;
}

size_t Replacer::Scan(std::string_view data, size_t cutoff, std::string& out) {
  const size_t k = needles_.size();
  for (size_t i = 0; i < k; ++i) next_[i] = Find(data, i, 0, cutoff);
  size_t pos = 0;
  for (;;) {
    size_t best = kNone;
    for (size_t i = 0; i < k; ++i) {
      if (next_[i] == kNone) continue;
      if (best == kNone || next_[i] < next_[best] ||
          (next_[i] == next_[best] && needles_[i].from.size() > needles_[best].from.size())) {
        best = i;
      }
    }
    if (best == kNone) break;
    const Needle& n = needles_[best];
    out.append(data.substr(pos, next_[best] - pos));
    out.append(n.to);
    ++counts_[n.pair_index];
    ++total_;
    pos = next_[best] + n.from.size();
    for (size_t i = 0; i < k; ++i) {
      if (next_[i] != kNone && next_[i] < pos) next_[i] = Find(data, i, pos, cutoff);
    }
  }
  size_t emit = std::max(pos, cutoff);
  out.append(data.substr(pos, emit - pos));
  return emit;
}

void Replacer::Feed(std::string_view in, std::string& out) {
  if (needles_.empty()) {
    out.append(in);
    return;
  }
  if (!hold_.empty()) {
    if (in.size() < max_len_) {
      // Small input: scan the held-back bytes and it together.
      hold_.append(in);
      size_t used = Scan(hold_, StreamingCutoff(hold_.size()), out);
      hold_.erase(0, used);
      return;
    }
    // The junction: matches starting in the held-back bytes end within the
    // first max_len_−1 bytes of `in`, so scan only that much together and
    // leave the rest of `in` uncopied.
    const size_t hb = hold_.size();
    scratch_.assign(hold_);
    scratch_.append(in.substr(0, max_len_ - 1));
    size_t used = Scan(scratch_, hb, out);
    hold_.clear();
    in.remove_prefix(used - hb);
  }
  out.reserve(out.size() + in.size());
  size_t used = Scan(in, StreamingCutoff(in.size()), out);
  hold_.assign(in.substr(used));
}

void Replacer::Finish(std::string& out) {
  if (hold_.empty()) return;
  size_t used = Scan(hold_, hold_.size(), out);
  (void)used;  // == hold_.size(): the cutoff is the end
  hold_.clear();
}

std::string ReplaceAll(std::string_view in,
                       const std::vector<std::pair<std::string, std::string>>& from_to,
                       size_t* count) {
  Replacer r(from_to);
  std::string out;
  out.reserve(in.size());
  r.Feed(in, out);
  r.Finish(out);
  if (count) *count = r.replacements();
  return out;
}

}  // namespace sandboxd::net

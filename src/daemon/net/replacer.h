// Streaming multi-needle string replacement, used by the HTTP relay to put
// secret values in for placeholders (requests) and placeholders back in for
// values (responses). Matching is leftmost, then longest, non-overlapping;
// the output never contains a needle that straddled two Feed() calls
// unreplaced. Linear in the input (one memmem pass per needle plus one copy).
//
// Not thread-safe; one Replacer per direction of one message.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sandboxd::net {

class Replacer {
 public:
  // Pairs with an empty `from` are ignored; when two pairs share a `from`
  // the first one wins. Identity pairs (from == to) are allowed: they only
  // count, which is how the relay notices a placeholder it must not send.
  explicit Replacer(std::vector<std::pair<std::string, std::string>> from_to);

  // Appends the replaced form of `in` to `out`. Holds back at most
  // (longest needle − 1) bytes that could start a needle completed by the
  // next call; every byte fed is emitted by a later Feed() or by Finish().
  void Feed(std::string_view in, std::string& out);
  // Emits what is held back (with replacements). The Replacer can be fed
  // again afterwards, as a new stream with the same needles and counters.
  void Finish(std::string& out);

  // Total replacements so far, and per pair (indexed as given to the
  // constructor; ignored and duplicate pairs stay 0).
  size_t replacements() const { return total_; }
  size_t replacements(size_t pair_index) const { return counts_[pair_index]; }
  // Bytes currently held back.
  size_t pending() const { return hold_.size(); }
  bool empty() const { return needles_.empty(); }

 private:
  struct Needle {
    std::string from, to;
    size_t pair_index;
  };
  // Replaces matches that start before `cutoff` (each lies wholly inside
  // `data` by the caller's choice of cutoff) and emits data[0, max(cutoff,
  // end of last match)). Returns how many bytes of `data` it emitted.
  size_t Scan(std::string_view data, size_t cutoff, std::string& out);
  size_t Find(std::string_view data, size_t needle, size_t from, size_t cutoff) const;
  // Cutoff for a buffer of `n` bytes that is not the end of the stream.
  size_t StreamingCutoff(size_t n) const { return n > max_len_ - 1 ? n - (max_len_ - 1) : 0; }

  std::vector<Needle> needles_;
  std::vector<size_t> counts_;
  std::vector<size_t> next_;  // Scan's per-needle cache of the next match
  size_t max_len_ = 0;
  size_t total_ = 0;
  std::string hold_;
  std::string scratch_;
};

// One-shot replacement; `count` (optional) receives the number of matches.
std::string ReplaceAll(std::string_view in,
                       const std::vector<std::pair<std::string, std::string>>& from_to,
                       size_t* count = nullptr);

}  // namespace sandboxd::net

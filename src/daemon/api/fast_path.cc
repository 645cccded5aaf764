#include "daemon/api/fast_path.h"

#include "common/base64.h"

namespace sandboxd::api {

std::optional<StreamChunk> ParseStreamEnqueue(std::string_view t) {
  constexpr std::string_view kHead = R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":)";
  constexpr std::string_view kData = R"(,"data":")";
  constexpr std::string_view kTail = R"("}})";
  if (!t.starts_with(kHead) || !t.ends_with(kTail)) return std::nullopt;
  t.remove_prefix(kHead.size());
  t.remove_suffix(kTail.size());
  int64_t id = 0;
  size_t i = 0;
  for (; i < t.size() && i < 15 && t[i] >= '0' && t[i] <= '9'; ++i) id = id * 10 + (t[i] - '0');
  if (i == 0 || (i > 1 && t[0] == '0')) return std::nullopt;
  t.remove_prefix(i);
  if (!t.starts_with(kData)) return std::nullopt;
  t.remove_prefix(kData.size());
  if (!IsBase64Text(t)) return std::nullopt;  // escapes, quotes, more keys: the general parser decides
  return StreamChunk{id, t};
}

}  // namespace sandboxd::api

#include "daemon/api/fast_path.h"

#include "common/base64.h"

namespace sandboxd::api {

std::optional<StreamChunk> ParseStreamEnqueue(std::string_view text) {
  auto m = MatchBase64Envelope(text, R"({"jsonrpc":"2.0","method":"$sandbox.stream.enqueue","params":{"streamId":)",
                               R"(,"data":")", R"("}})");
  if (!m) return std::nullopt;  // escapes, quotes, more keys: the general parser decides
  return StreamChunk{static_cast<int64_t>(m->id), m->base64};
}

}  // namespace sandboxd::api

// Pure helpers of `sandbox create --secret` and `sandbox net` (no I/O):
// parsing a --secret argument and the human-readable network report.
// Unit-tested in net_util_test.cc.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "client/error.h"
#include "client/network.h"
#include "client/wire.h"

namespace sandboxd::cli {

// Returns the value of an environment variable, or nullopt when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// Parses one --secret argument:
//   NAME=VALUE@HOST[,HOST...]  the value inline (visible in `ps`);
//   NAME@HOST[,HOST...]        the value of the CLI's own environment
//                              variable NAME (stays out of `ps`).
// NAME runs up to the first '=' or '@' and must be an environment variable
// name ([A-Za-z_][A-Za-z0-9_]*). The last '@' separates the hosts, so a value
// may contain '@'; hosts are allowNet patterns (checked by the server). An
// unset or empty value is refused. Error messages name the secret but never
// contain its value.
client::Result<client::Secret> ParseSecretArg(std::string_view arg, const EnvLookup& lookup_env);

// The report `sandbox net show` prints (several lines, '\n'-terminated).
std::string FormatNetworkInfo(const client::NetworkInfo& info);

}  // namespace sandboxd::cli

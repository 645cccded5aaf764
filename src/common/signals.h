// Signal names as the SDK spells them (WIRE.md §4.5) and Linux numbers.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sandboxd {

// "SIGKILL" → 9. nullopt for unknown names and for names with no Linux number
// (SIGBREAK, SIGEMT, SIGINFO).
std::optional<int> SignalNumber(std::string_view name);
// 9 → "SIGKILL"; empty for numbers without a name.
std::string SignalName(int signo);

}  // namespace sandboxd

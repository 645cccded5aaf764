// A tiny stderr logger for the agent. The agent is PID 1 of a sandbox and is
// linked statically, so it avoids spdlog/fmt; one write(2) per line keeps
// concurrent lines from interleaving.
#pragma once

namespace sandboxd::agent {

// printf-style; appends a newline. Never fails loudly: logging must not be a
// way to take down PID 1. Lines longer than ~1 KiB are truncated.
void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace sandboxd::agent

#include "agent/log.h"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>

namespace sandboxd::agent {

void Log(const char* fmt, ...) {
  char buf[1024];
  constexpr char kPrefix[] = "sandbox-agent: ";
  int n = snprintf(buf, sizeof buf, "%s", kPrefix);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) m = 0;
  size_t len = static_cast<size_t>(n) + static_cast<size_t>(m);
  if (len > sizeof buf - 2) len = sizeof buf - 2;
  buf[len++] = '\n';
  // Best effort: a full or closed stderr must not affect the agent.
  ssize_t ignored = ::write(STDERR_FILENO, buf, len);
  (void)ignored;
}

}  // namespace sandboxd::agent

// A static stand-in for the agent in isolation_test: exercises the backend's
// exec-by-fd path (execveat AT_EMPTY_PATH of a host binary that is not in the
// image). Reports its view on fd 3 and exits.
#include <unistd.h>

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  char buf[256];
  int n = std::snprintf(buf, sizeof buf, "pid=%d uid=%d argc=%d argv0=%s argv1=%s argv2=%s\n",
                        static_cast<int>(getpid()), static_cast<int>(getuid()), argc, argv[0],
                        argc > 1 ? argv[1] : "", argc > 2 ? argv[2] : "");
  if (write(3, buf, static_cast<size_t>(n)) != n) return 1;
  (void)!write(3, "__END__\n", 8);
  return 0;
}

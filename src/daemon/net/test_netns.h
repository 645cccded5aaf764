// Test helpers: network namespaces and names without the isolation backend.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::net::testing {

// A new, empty network namespace (only lo, down), kept alive by the returned
// fd. Made by a helper thread that unshares and exits.
Result<UniqueFd> NewNetns();

// Names unique to this test process: "<tag><pid in hex>_" (at most tag + 8
// characters; keep interface names within 15).
std::string UniqueName(const std::string& tag);

// A /24 inside 10.240.0.0/12 chosen at random per process (several test
// binaries run at once); returned as its base address.
uint32_t RandomTestSubnet24();

}  // namespace sandboxd::net::testing

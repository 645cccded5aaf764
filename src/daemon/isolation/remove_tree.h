// Removal of a sandbox's state directory, shared by the backends (they use
// the same state directory, so each reaps what the other left behind).
#pragma once

#include <string>

#include "common/error.h"

namespace sandboxd::isolation {

// Removes `parent`/`name` and everything below it, written for hostile
// contents (an overlay upper layer the sandbox wrote): never follows
// symlinks, never crosses into another filesystem (a mount point left there
// is an error, not a path to delete through), and copes with arbitrarily deep
// trees without exhausting fds or stack. A missing `name` is success.
Status RemoveTree(const std::string& parent, const std::string& name);

}  // namespace sandboxd::isolation

// The gateway's host key: one ed25519 key generated on first start and kept
// in the data dir, so clients see the same host key across restarts.
#pragma once

#include <libssh/libssh.h>

#include <memory>
#include <string>

#include "common/error.h"

namespace sandboxd::ssh {

struct SshKeyDeleter {
  void operator()(ssh_key k) const { ssh_key_free(k); }
};
using SshKey = std::unique_ptr<std::remove_pointer_t<ssh_key>, SshKeyDeleter>;

// Loads the private key at `path`, or generates an ed25519 key and writes it
// there (OpenSSH format, mode 0600, written to a temporary file and renamed
// into place so a crash never leaves a half-written key). A key file that
// group or others may read is tightened to 0600 with a warning; a file that
// exists but cannot be parsed is an error (never silently replaced: clients
// pinned the old key).
Result<SshKey> LoadOrCreateHostKey(const std::string& path);

// "SHA256:..." fingerprint of the key's public half, as `ssh-keygen -l` prints it.
std::string Fingerprint(ssh_key key);

}  // namespace sandboxd::ssh

#include "daemon/ssh/host_key.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "common/fd.h"

namespace sandboxd::ssh {
namespace {

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("write");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<SshKey> Generate(const std::string& path) {
  ssh_key raw = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &raw) != SSH_OK || raw == nullptr) {
    return FailMsg("generating an ed25519 host key failed");
  }
  SshKey key(raw);
  char* b64 = nullptr;
  if (ssh_pki_export_privkey_base64(key.get(), nullptr, nullptr, nullptr, &b64) != SSH_OK ||
      b64 == nullptr) {
    return FailMsg("encoding the host key failed");
  }
  std::string pem(b64);
  ssh_string_free_char(b64);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return FailErrno("creating " + tmp);
  auto st = WriteAll(fd.get(), pem);
  if (st && ::fsync(fd.get()) != 0) st = FailErrno("fsync " + tmp);
  fd.Reset();
  if (st && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = FailErrno("renaming " + tmp + " to " + path);
  if (!st) {
    ::unlink(tmp.c_str());
    return std::unexpected(st.error());
  }
  spdlog::info("ssh: generated host key {} ({})", path, Fingerprint(key.get()));
  return key;
}

}  // namespace

std::string Fingerprint(ssh_key key) {
  ssh_key pub = nullptr;
  if (ssh_pki_export_privkey_to_pubkey(key, &pub) != SSH_OK) return "?";
  SshKey pub_owner(pub);
  unsigned char* hash = nullptr;
  size_t len = 0;
  if (ssh_get_publickey_hash(pub, SSH_PUBLICKEY_HASH_SHA256, &hash, &len) != SSH_OK) return "?";
  char* text = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, len);
  ssh_clean_pubkey_hash(&hash);
  if (text == nullptr) return "?";
  std::string out(text);
  ssh_string_free_char(text);
  return out;
}

Result<SshKey> LoadOrCreateHostKey(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return FailErrno("stat " + path);
    return Generate(path);
  }
  if (!S_ISREG(st.st_mode)) return FailMsg(path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    spdlog::warn("ssh: host key {} was readable by others (mode {:o}); setting 0600", path,
                 st.st_mode & 07777);
    if (::chmod(path.c_str(), 0600) != 0) return FailErrno("chmod " + path);
  }
  ssh_key raw = nullptr;
  if (ssh_pki_import_privkey_file(path.c_str(), nullptr, nullptr, nullptr, &raw) != SSH_OK ||
      raw == nullptr) {
    return FailMsg("cannot read the SSH host key " + path +
                   " (remove it to generate a new one; clients will then see a changed host key)");
  }
  return SshKey(raw);
}

}  // namespace sandboxd::ssh

// The per-sandbox writable disk: a sparse raw file with an empty ext4 on it.
//
// mke2fs runs once, on a template (at backend start); each sandbox gets a
// copy that shares the template's holes: a reflink (FICLONE) where the
// filesystem has them, else a copy of the allocated extents only (SEEK_DATA /
// SEEK_HOLE; 4-5 MB of 10 GB for an empty ext4). No process is started per
// sandbox.
#pragma once

#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::isolation::microvm {

// Makes `path` a sparse file of `bytes` holding an empty ext4 (no journal: the
// disk dies with its sandbox; no reserved blocks; label "scratch"), unless a
// template made with the same parameters is there already (`path`.stamp).
// Runs mke2fs (e2fsprogs); written beside `path` and renamed into place.
Status EnsureScratchTemplate(const std::string& path, uint64_t bytes);

// Creates `dst` (O_EXCL, mode 0600) as a copy of `src` with the same holes and
// returns it open O_RDWR | O_CLOEXEC.
Result<UniqueFd> CloneSparse(const std::string& src, const std::string& dst);

// Bytes allocated to the file (st_blocks * 512), for tests and logs.
Result<uint64_t> AllocatedBytes(int fd);

}  // namespace sandboxd::isolation::microvm

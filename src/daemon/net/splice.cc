#include "daemon/net/splice.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/write.hpp>
#include <cerrno>
#include <memory>

#include "common/fd.h"

namespace sandboxd::net {
namespace {

using boost::asio::ip::tcp;
constexpr size_t kChunk = 1 << 20;

// Shared by both directions; the last direction to finish closes and reports.
struct Pair : std::enable_shared_from_this<Pair> {
  tcp::socket down, up;
  SpliceStats stats;
  int open_dirs = 2;
  std::function<void(const SpliceStats&)> done;

  Pair(tcp::socket d, tcp::socket u) : down(std::move(d)), up(std::move(u)) {}

  void Finished() {
    if (--open_dirs > 0) return;
    boost::system::error_code ec;
    down.close(ec);
    up.close(ec);
    if (done) done(stats);
  }
  // An error on either side ends both directions at once.
  void Abort() {
    boost::system::error_code ec;
    down.close(ec);
    up.close(ec);
  }
};

// One direction: src → pipe → dst. Reads only when the pipe is empty, so at
// most one pipe's worth is in flight per direction.
struct Direction : std::enable_shared_from_this<Direction> {
  std::shared_ptr<Pair> pair;
  tcp::socket& src;
  tcp::socket& dst;
  uint64_t& counter;
  UniqueFd rd, wr;     // the pipe
  size_t in_pipe = 0;  // bytes spliced in, not yet out

  Direction(std::shared_ptr<Pair> p, tcp::socket& s, tcp::socket& d, uint64_t& c)
      : pair(std::move(p)), src(s), dst(d), counter(c) {}

  bool Init() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return false;
    rd = UniqueFd(fds[0]);
    wr = UniqueFd(fds[1]);
    ::fcntl(wr.get(), F_SETPIPE_SZ, static_cast<int>(kChunk));  // best effort: falls back to 64 KiB
    return true;
  }

  void Pump() {
    for (;;) {
      if (in_pipe > 0) {
        ssize_t n = ::splice(rd.get(), nullptr, dst.native_handle(), nullptr, in_pipe,
                             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
          dst.async_wait(tcp::socket::wait_write, [self = shared_from_this()](auto ec) {
            if (ec) return self->Fail();
            self->Pump();
          });
          return;
        }
        if (n <= 0) return Fail();
        in_pipe -= static_cast<size_t>(n);
        counter += static_cast<uint64_t>(n);
        continue;
      }
      ssize_t n = ::splice(src.native_handle(), nullptr, wr.get(), nullptr, kChunk,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        src.async_wait(tcp::socket::wait_read, [self = shared_from_this()](auto ec) {
          if (ec) return self->Fail();
          self->Pump();
        });
        return;
      }
      if (n < 0) return Fail();
      if (n == 0) {  // EOF from src: pass the half-close on
        boost::system::error_code ec;
        dst.shutdown(tcp::socket::shutdown_send, ec);
        pair->Finished();
        return;
      }
      in_pipe = static_cast<size_t>(n);
    }
  }

  void Fail() {
    pair->Abort();
    pair->Finished();
  }
};

void StartDirections(const std::shared_ptr<Pair>& pair) {
  auto a = std::make_shared<Direction>(pair, pair->down, pair->up, pair->stats.down_to_up);
  auto b = std::make_shared<Direction>(pair, pair->up, pair->down, pair->stats.up_to_down);
  if (!a->Init() || !b->Init()) {
    pair->Abort();
    pair->open_dirs = 1;
    pair->Finished();
    return;
  }
  a->Pump();
  b->Pump();
}

}  // namespace

void Splice(tcp::socket down, tcp::socket up, std::string prefix,
            std::function<void(const SpliceStats&)> done) {
  boost::system::error_code ec;
  down.non_blocking(true, ec);
  up.non_blocking(true, ec);
  auto pair = std::make_shared<Pair>(std::move(down), std::move(up));
  pair->done = std::move(done);
  if (prefix.empty()) return StartDirections(pair);
  auto buf = std::make_shared<std::string>(std::move(prefix));
  boost::asio::async_write(pair->up, boost::asio::buffer(*buf), [pair, buf](auto wec, size_t n) {
    if (wec) {
      pair->Abort();
      pair->open_dirs = 1;
      return pair->Finished();
    }
    pair->stats.down_to_up += n;
    StartDirections(pair);
  });
}

}  // namespace sandboxd::net

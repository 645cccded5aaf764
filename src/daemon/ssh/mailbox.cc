#include "daemon/ssh/mailbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace sandboxd::ssh {

Result<std::shared_ptr<Mailbox>> Mailbox::Create() {
  UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!efd) return FailErrno("eventfd");
  return std::shared_ptr<Mailbox>(new Mailbox(std::move(efd)));
}

bool Mailbox::Post(ToSsh m) {
  {
    std::lock_guard lk(mu_);
    if (closed_) return false;
    q_.push_back(std::move(m));
    if (q_.size() > 1) return true;  // the consumer has been woken already
  }
  uint64_t one = 1;
  // Cannot fail short of a counter overflow (2^64 − 2 wake-ups unconsumed).
  [[maybe_unused]] auto n = ::write(efd_.get(), &one, sizeof one);
  return true;
}

std::deque<ToSsh> Mailbox::Take() {
  uint64_t v;
  [[maybe_unused]] auto n = ::read(efd_.get(), &v, sizeof v);  // EAGAIN when nothing was signalled
  std::lock_guard lk(mu_);
  return std::exchange(q_, {});
}

void Mailbox::Close() {
  std::lock_guard lk(mu_);
  closed_ = true;
  q_.clear();
}

bool Mailbox::closed() const {
  std::lock_guard lk(mu_);
  return closed_;
}

}  // namespace sandboxd::ssh

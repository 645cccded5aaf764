#include "agent/worker_pool.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <system_error>
#include <thread>

#include "agent/fs_util.h"
#include "agent/log.h"

namespace sandboxd::agent {

Result<std::shared_ptr<LoopQueue>> LoopQueue::Create() {
  std::shared_ptr<LoopQueue> q(new LoopQueue());
  q->efd_.Reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!q->efd_) return FailErrno("eventfd");
  return q;
}

void LoopQueue::Post(std::function<void()> fn) {
  bool wake;
  {
    std::lock_guard lock(mu_);
    wake = pending_.empty();
    pending_.push_back(std::move(fn));
  }
  // One wakeup per batch: the loop drains everything at once.
  if (wake) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(efd_.get(), &one, sizeof one);
  }
}

void LoopQueue::RunPending() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(efd_.get(), &count, sizeof count);
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  for (auto& fn : batch) fn();
}

namespace {

void WorkerInit() {
  // fsuid/fsgid are set per op; groups once per thread. The agent runs as
  // root with an empty group list anyway, this makes it independent of how
  // it was started.
  fs::DropSupplementaryGroups();
  fs::RestrictThreadCapabilities();
}

}  // namespace

WorkerPool::WorkerPool(size_t threads, size_t max_dedicated) : max_dedicated_(max_dedicated) {
  for (size_t i = 0; i < threads; ++i) {
    try {
      std::thread([state = state_] {
        WorkerInit();
        std::unique_lock lock(state->mu);
        while (true) {
          state->cv.wait(lock, [&] { return state->stop || !state->jobs.empty(); });
          if (state->stop) return;
          auto job = std::move(state->jobs.front());
          state->jobs.pop_front();
          lock.unlock();
          try {
            job();
          } catch (const std::exception& e) {
            Log("worker: internal error: %s", e.what());
          }
          lock.lock();
        }
      }).detach();
    } catch (const std::system_error& e) {
      Log("worker pool: cannot start a thread: %s", e.what());
    }
  }
}

WorkerPool::~WorkerPool() {
  std::lock_guard lock(state_->mu);
  state_->stop = true;
  state_->cv.notify_all();
}

bool WorkerPool::Submit(std::function<void()> job) {
  std::lock_guard lock(state_->mu);
  if (state_->jobs.size() >= kMaxQueuedJobs) return false;
  state_->jobs.push_back(std::move(job));
  state_->cv.notify_one();
  return true;
}

bool WorkerPool::Dedicated(std::function<void()> job) {
  if (state_->dedicated.fetch_add(1) >= max_dedicated_) {
    state_->dedicated.fetch_sub(1);
    return false;
  }
  try {
    std::thread([state = state_, job = std::move(job)] {
      WorkerInit();
      try {
        job();
      } catch (const std::exception& e) {
        Log("worker: internal error: %s", e.what());
      }
      state->dedicated.fetch_sub(1);
    }).detach();
  } catch (const std::system_error& e) {
    state_->dedicated.fetch_sub(1);
    Log("cannot start a thread: %s", e.what());
    return false;
  }
  return true;
}

}  // namespace sandboxd::agent

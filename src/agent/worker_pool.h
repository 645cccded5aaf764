// Threads for the agent's filesystem ops, and the way back to its loop.
//
// LoopQueue: worker threads Post() closures; the event loop watches fd()
// (an eventfd) and runs them with RunPending(). This is the only path by
// which worker results reach the loop, so every reply is sent from the loop
// thread.
//
// WorkerPool: a fixed number of threads for short jobs, plus Dedicated()
// threads for jobs that may block indefinitely (a contended flock, a stream
// waiting for credit). Worker threads inherit the loop's blocked signal mask
// (so SIGCHLD/SIGTERM still go to the signalfd) and drop supplementary groups.
//
// Threads are detached and share their state through shared_ptr: the agent
// can exit while a job is stuck in the kernel (e.g. flock), which a join
// would turn into a hang of PID 1.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/error.h"
#include "common/fd.h"

namespace sandboxd::agent {

class LoopQueue {
 public:
  static Result<std::shared_ptr<LoopQueue>> Create();
  int fd() const { return efd_.get(); }
  // Any thread. Runs `fn` on the loop thread later, in posting order.
  void Post(std::function<void()> fn);
  // Loop thread: runs everything posted so far.
  void RunPending();

 private:
  LoopQueue() = default;
  UniqueFd efd_;
  std::mutex mu_;
  std::vector<std::function<void()>> pending_;
};

class WorkerPool {
 public:
  // Starts `threads` pool threads; at most `max_dedicated` dedicated ones
  // may run at once.
  WorkerPool(size_t threads, size_t max_dedicated);
  ~WorkerPool();  // stops idle pool threads; running jobs finish on their own
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `job` for a pool thread; false (job dropped) when kMaxQueuedJobs
  // are already waiting, which bounds what a flood of requests can cost.
  bool Submit(std::function<void()> job);
  static constexpr size_t kMaxQueuedJobs = 4096;
  // Runs `job` on a new thread; false (job not run) at the limit or when no
  // thread can be created.
  bool Dedicated(std::function<void()> job);

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    bool stop = false;
    std::atomic<size_t> dedicated{0};
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
  size_t max_dedicated_;
};

}  // namespace sandboxd::agent

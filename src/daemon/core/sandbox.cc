#include "daemon/core/sandbox.h"

#include <csignal>

#include "common/signals.h"

namespace sandboxd::core {
namespace {
// After a process exits, how long its output streams may stay open (held by a
// grandchild) before processWait answers anyway.
constexpr auto kOutputGrace = std::chrono::milliseconds(200);
constexpr size_t kMaxFinishedRemembered = 4096;

}  // namespace

Sandbox::Sandbox(boost::asio::io_context& io, std::string id, std::string org, CreateConfig cfg, int64_t created_ms)
    : io_(io),
      id_(std::move(id)),
      org_(std::move(org)),
      cfg_(std::move(cfg)),
      created_ms_(created_ms),
      stop_at_ms_(cfg_.stop_at_ms),
      stop_timer_(io),
      grace_timer_(io) {
  env_ = {
      {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
      {"HOME", "/home/app"},
      {"USER", "app"},
      {"LOGNAME", "app"},
      {"SHELL", "/bin/bash"},
      {"LANG", "C.UTF-8"},
  };
  for (const auto& [k, v] : cfg_.env) env_[k] = v;
}

std::vector<std::string> Sandbox::ProcessEnv(const std::map<std::string, std::string>& extra, bool clear) const {
  std::map<std::string, std::string> merged;
  if (!clear) merged = env_;
  for (const auto& [k, v] : extra) merged[k] = v;
  std::vector<std::string> out;
  out.reserve(merged.size());
  for (const auto& [k, v] : merged) out.push_back(k + "=" + v);
  return out;
}

void Sandbox::RegisterProcess(int64_t pid, int open_outputs) {
  Proc& p = procs_[pid];
  p = Proc{};
  p.open_outputs = open_outputs;
  p.oom_base = instance_ ? instance_->OomKillCount() : 0;
}

void Sandbox::OutputClosed(int64_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  if (it->second.open_outputs > 0) --it->second.open_outputs;
  MaybeFinish(pid, false);
}

void Sandbox::OnAgentEvent(const nlohmann::json& ev) {
  if (ev.value("event", "") != "exit") return;
  auto pid_it = ev.find("pid");
  if (pid_it == ev.end() || !pid_it->is_number_integer()) return;
  int64_t pid = pid_it->get<int64_t>();
  auto it = procs_.find(pid);
  if (it == procs_.end() || it->second.exit) return;  // not ours, or a duplicate
  ExitStatus st;
  st.code = ev.value("code", -1);
  st.signal = ev.value("signal", 0);
  if (st.signal == SIGKILL && instance_ && instance_->OomKillCount() > it->second.oom_base) st.oom = true;
  // The microVM's agent counts OOM kills inside the guest, where the host cannot.
  if (auto oom = ev.find("oom"); st.signal == SIGKILL && oom != ev.end() && oom->is_boolean() && oom->get<bool>()) {
    st.oom = true;
  }
  it->second.exit = st;
  MaybeFinish(pid, false);
  if (auto f = procs_.find(pid); f != procs_.end() && !f->second.done) {
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, kOutputGrace);
    f->second.grace = timer;
    std::weak_ptr<Sandbox> weak = weak_from_this();
    timer->async_wait([weak, pid](boost::system::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->MaybeFinish(pid, true);
    });
  }
}

void Sandbox::MaybeFinish(int64_t pid, bool force) {
  auto it = procs_.find(pid);
  if (it == procs_.end() || it->second.done || !it->second.exit) return;
  if (it->second.open_outputs > 0 && !force) return;
  Proc& p = it->second;
  p.done = true;
  if (p.grace) p.grace->cancel();
  auto waiters = std::move(p.waiters);
  p.waiters.clear();
  ExitStatus st = *p.exit;
  finished_order_.push_back(pid);
  while (finished_order_.size() > kMaxFinishedRemembered) {
    procs_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
  for (auto& w : waiters) w(st);
}

void Sandbox::Wait(int64_t pid, WaitFn fn) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) {
    fn(std::unexpected(Error{ESRCH, "no process with pid " + std::to_string(pid)}));
    return;
  }
  if (it->second.done) {
    fn(*it->second.exit);
    return;
  }
  it->second.waiters.push_back(std::move(fn));
}

void Sandbox::Kill(int64_t pid, int signo, std::function<void(Status)> done) {
  auto it = procs_.find(pid);
  if (it == procs_.end() || it->second.exit) {
    done(std::unexpected(Error{ESRCH, "process " + std::to_string(pid) + " has already exited"}));
    return;
  }
  link_->Call("kill", {{"pid", pid}, {"signal", signo}}, [done = std::move(done)](Result<nlohmann::json> r) {
    if (!r) done(std::unexpected(r.error()));
    else done({});
  });
}

void Sandbox::FailAllWaiters(const Error& e) {
  for (auto& [pid, p] : procs_) {
    auto waiters = std::move(p.waiters);
    p.waiters.clear();
    for (auto& w : waiters) w(std::unexpected(e));
  }
}

void Sandbox::Attach(Attachment* a) {
  attachments_.insert(a);
  grace_timer_.cancel();
}

void Sandbox::Detach(Attachment* a) {
  if (!attachments_.erase(a)) return;
  if (attachments_.empty() && on_last_detach_) on_last_detach_();
}

}  // namespace sandboxd::core

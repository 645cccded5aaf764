#include "agent/test_link_client.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sandboxd::agent::testing {
namespace {

using Clock = std::chrono::steady_clock;

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

std::unique_ptr<AgentUnderTest> AgentUnderTest::Start(const std::string& binary) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    perror("socketpair");
    return nullptr;
  }
  UniqueFd ours(sv[0]);
  UniqueFd theirs(sv[1]);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return nullptr;
  }
  if (pid == 0) {
    if (theirs.get() == 3) {
      fcntl(3, F_SETFD, 0);
    } else if (dup2(theirs.get(), 3) < 0) {
      _exit(126);
    }
    execl(binary.c_str(), binary.c_str(), "--link-fd", "3", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::unique_ptr<AgentUnderTest> agent(new AgentUnderTest());
  agent->pid_ = pid;
  int fl = fcntl(ours.get(), F_GETFL);
  fcntl(ours.get(), F_SETFL, fl | O_NONBLOCK);
  agent->link_ = std::move(ours);
  return agent;
}

std::unique_ptr<AgentUnderTest> AgentUnderTest::Attach(UniqueFd link) {
  std::unique_ptr<AgentUnderTest> agent(new AgentUnderTest());
  int fl = fcntl(link.get(), F_GETFL);
  fcntl(link.get(), F_SETFL, fl | O_NONBLOCK);
  agent->link_ = std::move(link);
  return agent;
}

AgentUnderTest::~AgentUnderTest() {
  CloseLink();
  if (pid_ > 0 && !WaitExit(Ms(3000))) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

bool AgentUnderTest::Send(link::FrameType type, uint32_t channel, std::string_view payload) {
  link::AppendFrame(outbuf_, type, channel, payload);
  return Flush();
}

bool AgentUnderTest::Flush() {
  auto deadline = Clock::now() + kDefaultTimeout;
  while (!outbuf_.empty() && !link_closed && Clock::now() < deadline) {
    PumpOnce(RemainingMs(deadline));
  }
  return outbuf_.empty();
}

uint64_t AgentUnderTest::Request(nlohmann::json request) {
  uint64_t id = next_id_++;
  request["id"] = id;
  Send(link::FrameType::kControl, 0, request.dump());
  return id;
}

std::optional<nlohmann::json> AgentUnderTest::Await(uint64_t id, Ms timeout) {
  if (!WaitUntil([&] { return responses.contains(id); }, timeout)) return std::nullopt;
  return responses[id];
}

nlohmann::json AgentUnderTest::Call(nlohmann::json request, Ms timeout) {
  auto r = Await(Request(std::move(request)), timeout);
  return r ? *r : nlohmann::json();
}

uint64_t AgentUnderTest::Credit(uint32_t channel) {
  auto it = send_credit.find(channel);
  if (it == send_credit.end()) it = send_credit.emplace(channel, link::kInitialWindow).first;
  return it->second;
}

bool AgentUnderTest::SendInput(uint32_t channel, std::string_view data, Ms timeout) {
  auto deadline = Clock::now() + timeout;
  while (!data.empty()) {
    if (!WaitUntil([&] { return Credit(channel) > 0 || link_closed; }, Ms(RemainingMs(deadline)))) {
      return false;
    }
    if (link_closed) return false;
    size_t n = std::min<uint64_t>({Credit(channel), data.size(), link::kMaxDataChunk});
    send_credit[channel] -= n;
    if (!Send(link::FrameType::kData, channel, data.substr(0, n))) return false;
    data.remove_prefix(n);
  }
  return true;
}

void AgentUnderTest::Grant(uint32_t channel, uint32_t credit) {
  Out(channel).granted += credit;
  link::AppendWindow(outbuf_, channel, credit);
  Flush();
}

bool AgentUnderTest::WaitUntil(const std::function<bool()>& cond, Ms timeout) {
  auto deadline = Clock::now() + timeout;
  while (!cond()) {
    int left = RemainingMs(deadline);
    if (left == 0) return false;
    // Short slices: some conditions (e.g. /proc state) change without any
    // frame arriving.
    if (!PumpOnce(std::min(left, 10))) usleep(1000 * std::min(left, 10));
  }
  return true;
}

void AgentUnderTest::PumpFor(Ms duration) {
  auto deadline = Clock::now() + duration;
  while (RemainingMs(deadline) > 0) {
    if (!PumpOnce(RemainingMs(deadline))) {
      // Link closed: nothing more will arrive; just let the time pass.
      usleep(1000 * RemainingMs(deadline));
      return;
    }
  }
}

void AgentUnderTest::CloseLink() {
  link_.Reset();
  link_closed = true;
}

std::optional<int> AgentUnderTest::WaitExit(Ms timeout) {
  if (pid_ <= 0) return std::nullopt;
  auto deadline = Clock::now() + timeout;
  while (true) {
    int status;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return status;
    }
    if (r < 0 || Clock::now() >= deadline) return std::nullopt;
    usleep(2000);
  }
}

bool AgentUnderTest::PumpOnce(int timeout_ms) {
  if (link_closed || !link_) return false;
  pollfd pfd{link_.get(), static_cast<short>(POLLIN | (outbuf_.empty() ? 0 : POLLOUT)), 0};
  int n = poll(&pfd, 1, timeout_ms);
  if (n <= 0) return true;
  if (pfd.revents & POLLOUT) {
    ssize_t w = ::send(link_.get(), outbuf_.data(), outbuf_.size(), MSG_NOSIGNAL);
    if (w > 0) outbuf_.erase(0, w);
  }
  if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
    char buf[128 * 1024];
    ssize_t r = ::read(link_.get(), buf, sizeof buf);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
      link_closed = true;
      return false;
    }
    size_t off = 0;
    while (r > 0 && off < static_cast<size_t>(r)) {
      auto used = decoder_.Feed(std::span<const char>(buf + off, r - off));
      if (!used) {
        violation = "undecodable frame: " + used.error().message;
        link_closed = true;
        return false;
      }
      off += *used;
      while (auto f = decoder_.Next()) HandleFrame(*f);
    }
  }
  return true;
}

void AgentUnderTest::HandleFrame(link::Frame& f) {
  using link::FrameType;
  switch (f.type) {
    case FrameType::kControl: {
      auto j = nlohmann::json::parse(f.payload, nullptr, false);
      if (!j.is_object()) {
        violation = "bad control payload: " + f.payload;
        return;
      }
      if (j.contains("id")) {
        uint64_t id = j["id"].get<uint64_t>();
        if (responses.contains(id)) violation = "second response to id " + std::to_string(id);
        responses[id] = j;
      } else {
        events.push_back(j);
        std::string name = j.value("event", "");
        if (name == "ready") ready = true;
        if (name == "exit") {
          int64_t pid = j.value("pid", int64_t{-1});
          if (exits.contains(pid)) violation = "second exit event for " + std::to_string(pid);
          exits[pid] = j;
        }
      }
      return;
    }
    case FrameType::kData: {
      OutChannel& ch = Out(f.channel);
      ch.bytes += f.payload.size();
      if (ch.bytes > ch.granted) {
        violation = "channel " + std::to_string(f.channel) + ": agent sent " +
                    std::to_string(ch.bytes) + " bytes with " + std::to_string(ch.granted) +
                    " credit";
      }
      if (ch.sink) {
        ch.sink(f.payload);
      } else if (ch.data.size() < kKeepBytes) {
        ch.data.append(f.payload.substr(0, kKeepBytes - ch.data.size()));
      }
      if (ch.eof) violation = "DATA after EOF on " + std::to_string(f.channel);
      if (ch.auto_window && !f.payload.empty()) {
        ch.granted += f.payload.size();
        link::AppendWindow(outbuf_, f.channel, static_cast<uint32_t>(f.payload.size()));
      }
      return;
    }
    case FrameType::kEof:
      Out(f.channel).eof = true;
      return;
    case FrameType::kWindow: {
      auto credit = link::ParseWindow(f.payload);
      if (!credit) {
        violation = "malformed WINDOW";
        return;
      }
      Credit(f.channel);
      send_credit[f.channel] += *credit;
      return;
    }
    case FrameType::kReset:
      resets.insert(f.channel);
      return;
  }
}

std::optional<char> ProcState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  size_t paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size()) return std::nullopt;
  return line[paren + 2];
}

std::vector<ProcEntry> ChildrenOf(pid_t parent) {
  std::vector<ProcEntry> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    char* end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream rest(line.substr(paren + 2));
    char state;
    long ppid;
    if (rest >> state >> ppid && ppid == parent) out.push_back({static_cast<pid_t>(pid), state});
  }
  closedir(dir);
  return out;
}

}  // namespace sandboxd::agent::testing

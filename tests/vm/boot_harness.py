#!/usr/bin/env python3
"""boot_harness.py SOCKET TIMEOUT_S -- QEMU_ARGV...

Host side of tests/vm/boot-smoke.sh for one boot. Starts QEMU, connects to
the agent port's unix socket (QEMU listens: server=on,wait=off), and reads
the test init's lines:
  hello ...   the agent port is up: the boot-to-agent mark
  ready ...   root mounted, overlay on /, checks passed
  idle ...    a cold python3 from the image has run; the guest now waits
  fail ...    the guest gave up (the line says why)
After "idle" it samples QEMU's VmRSS (the guest is idle, waiting), sends
"poweroff" and waits for QEMU to exit. Prints one JSON object on stdout:
  {"ok", "hello_s", "hello_cpu_s", "ready_s", "exit_s", "poweroff_s" (sent
   -> QEMU gone), "rss_kb", "rss_anon_kb", "hello",
   "ready", "idle", "error", "qemu_rc", "qemu_stderr"}
Times are seconds since QEMU was started (fork+exec included). Exit status 0
only when everything happened within TIMEOUT_S.
"""

import json
import os
import socket
import subprocess
import sys
import time


def status_kb(pid, field):
    """A "<field>: N kB" line of /proc/<pid>/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid):
    """User+system CPU seconds QEMU has used so far (all its threads). Less
    sensitive than wall time to other load on the host, so A/B comparisons of
    boot options use it too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def main():
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        sys.exit(2)
    sock_path, timeout = sys.argv[1], float(sys.argv[2])
    argv = sys.argv[4:]
    res = {"ok": False, "hello_s": None, "hello_cpu_s": None, "ready_s": None, "exit_s": None,
           "poweroff_s": None, "rss_kb": None, "rss_anon_kb": None,
           "hello": None, "idle": None, "ready": None, "error": None, "qemu_rc": None}
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass

    t0 = time.monotonic()
    deadline = t0 + timeout
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    s = None
    try:
        # QEMU creates the socket before the guest runs; poll for it.
        while s is None:
            if qemu.poll() is not None:
                raise RuntimeError("QEMU exited before its agent socket appeared")
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for the agent socket")
            try:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(sock_path)
                s = c
            except (FileNotFoundError, ConnectionRefusedError):
                c.close()
                time.sleep(0.001)
        buf = b""
        while res["idle"] is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("timed out waiting for the guest")
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("agent socket closed (QEMU gone?)")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                now = time.monotonic() - t0
                if text.startswith("hello "):
                    res["hello"], res["hello_s"] = text, now
                    res["hello_cpu_s"] = cpu_s(qemu.pid)
                elif text.startswith("ready "):
                    res["ready"], res["ready_s"] = text, now
                elif text.startswith("idle "):
                    res["idle"] = text
                elif text.startswith("fail "):
                    raise RuntimeError("guest: " + text)
        # VmRSS counts file pages shared with every other VM (the kernel
        # image QEMU maps, its own binary); RssAnon is what this VM costs.
        res["rss_kb"] = status_kb(qemu.pid, "VmRSS")
        res["rss_anon_kb"] = status_kb(qemu.pid, "RssAnon")
        t_off = time.monotonic()
        s.sendall(b"poweroff\n")
        qemu.wait(timeout=max(0.1, deadline - time.monotonic()))
        res["exit_s"] = time.monotonic() - t0
        res["poweroff_s"] = time.monotonic() - t_off
        res["qemu_rc"] = qemu.returncode
        res["ok"] = qemu.returncode == 0
        if not res["ok"]:
            res["error"] = f"QEMU exited with {qemu.returncode}"
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        res["error"] = str(e)
    finally:
        if s is not None:
            s.close()
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        res["qemu_rc"] = qemu.returncode
        res["qemu_stderr"] = qemu.stderr.read().decode("utf-8", "replace")[-2000:]
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
    print(json.dumps(res))
    sys.exit(0 if res["ok"] else 1)


if __name__ == "__main__":
    main()

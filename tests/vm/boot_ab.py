#!/usr/bin/env python3
"""boot_ab.py VARIANTS.json ROUNDS [--work DIR] [--kernel-dir DIR]

Compares boot variants of the microVM the way docs/microvm.md's numbers were
taken: ROUNDS rounds, every variant once per round in shuffled order (so a
slow stretch on a shared host hits all variants alike), medians per variant.
Run tests/vm/boot-smoke.sh first: it leaves the test initramfs and root image
in its work directory (default build-vm/smoke), which are the defaults here.

VARIANTS.json maps a name to overrides of the base boot, e.g.
  {"pvh": {}, "bzImage": {"kernel": "vmlinuz"},
   "lz4hc": {"root": "/path/root-lz4hc.erofs"},
   "bulk-read": {"probe": "tar cf - /usr/bin | wc -c"}}
Keys: kernel ("vmlinux" | "vmlinuz" | a path), initrd, root, fs (erofs|ext4),
upper (disk|tmpfs), machine (microvm options), append (extra kernel
parameters), args (extra QEMU arguments, a list), smp, mem, accel, probe (a
shell command the test init times instead of the cold python3).

Columns: wall seconds QEMU start -> hello; QEMU CPU seconds at hello; guest
clock at /init and at hello; wall seconds to ready; guest module loading and
root mounting; the probe; QEMU RSS and its anonymous part at idle (MB).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variants")
    ap.add_argument("rounds", type=int)
    ap.add_argument("--work", default=os.path.join(SRC, "build-vm", "smoke"))
    ap.add_argument("--kernel-dir", default=os.path.join(SRC, "build-vm", "kernel-cache", "current"))
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    with open(a.variants) as f:
        variants = json.load(f)

    tsc = os.path.join(a.work, "tsc_khz")
    khz = subprocess.run([tsc], capture_output=True, text=True, check=True).stdout.strip()
    sock = os.path.join(a.work, "ab.sock")
    scratch = os.path.join(a.work, "ab-scratch.img")

    def argv(v):
        fs = v.get("fs", "erofs")
        kernel = v.get("kernel", "vmlinux")
        if kernel in ("vmlinux", "vmlinuz"):
            kernel = os.path.join(a.kernel_dir, kernel)
        accel = v.get("accel", "tcg")
        append = "reboot=t panic=-1 quiet 8250.nr_uarts=0 cryptomgr.notests pci=off " \
                 "i8042.noaux i8042.nokbd i8042.nopnp"
        if accel == "tcg":
            append += f" tsc=reliable tsc_early_khz={khz}"
        append += " " + v.get("append", "")
        append += f" -- rootfs={fs} upper={v.get('upper', 'disk')}"
        if "probe" in v:
            append += f' probe="{v["probe"]}"'
        return [
            "qemu-system-x86_64",
            "-M", "microvm," + v.get("machine", "x-option-roms=off,auto-kernel-cmdline=off,isa-serial=off"),
            "-accel", accel, "-m", str(v.get("mem", 1280)), "-smp", str(v.get("smp", 2)),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", kernel, "-initrd", v.get("initrd", os.path.join(a.work, "initrd")),
            "-append", append,
            "-drive", f"id=root,file={v.get('root', os.path.join(a.work, 'root.' + fs))},"
                      "format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root,serial=root",
            "-drive", f"id=scratch,file={scratch},format=raw,if=none,cache=unsafe,discard=unmap",
            "-device", "virtio-blk-device,drive=scratch,serial=scratch",
            "-device", "virtio-serial-device,max_ports=2",
            "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=sandbox.agent",
            "-object", "rng-builtin,id=rng",
            "-device", "virtio-rng-device,rng=rng,max-bytes=4096,period=1000",
        ] + v.get("args", [])

    rng = random.Random(a.seed)
    rows = {k: [] for k in variants}
    for _ in range(a.rounds):
        order = list(variants.items())
        rng.shuffle(order)
        for name, v in order:
            if os.path.exists(scratch):
                os.unlink(scratch)
            subprocess.run(["truncate", "-s", "10G", scratch], check=True)
            subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0",
                            scratch], check=True)
            p = subprocess.run([sys.executable, os.path.join(HERE, "boot_harness.py"), sock, "120",
                                "--"] + argv(v), capture_output=True, text=True)
            r = json.loads(p.stdout)
            if not r["ok"]:
                print(f"{name}: FAILED: {r['error']} {r.get('qemu_stderr', '')}", file=sys.stderr)
                continue
            hello = dict(x.split("=", 1) for x in r["hello"].split()[2:] if "=" in x)
            ready = dict(x.split("=", 1) for x in r["ready"].split()[1:] if "=" in x)
            rows[name].append((
                r["hello_s"], r["hello_cpu_s"], float(hello["init"]), float(hello["t"]),
                r["ready_s"], float(hello["modules"].split("/")[1].rstrip("s")),
                float(ready["root_mounted"]) - float(hello["t"]),
                float(r["idle"].split("=")[1]), r["rss_kb"] / 1024, r["rss_anon_kb"] / 1024,
            ))
    if os.path.exists(scratch):
        os.unlink(scratch)

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"medians over {a.rounds} shuffled rounds; host load average now {load}")
    cols = ["hello", "cpu", "g_init", "g_hello", "ready", "g_mods", "g_mount", "probe",
            "rss", "anon"]
    width = max(len(k) for k in variants) + 2
    print(" " * width + " ".join(f"{c:>8}" for c in cols))
    for name, rs in rows.items():
        if not rs:
            print(f"{name:<{width}}no successful boot")
            continue
        med = [statistics.median(c) for c in zip(*rs)]
        print(f"{name:<{width}}" + " ".join(f"{x:8.3f}" for x in med[:8]) +
              "".join(f" {x:8.0f}" for x in med[8:]) + f"   (n={len(rs)})")


if __name__ == "__main__":
    main()

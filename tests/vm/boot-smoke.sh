#!/usr/bin/env bash
# tests/vm/boot-smoke.sh — boots the microVM boot path end to end and times it.
#
# Builds (or reuses) every piece with the project's scripts — the Debian cloud
# kernel (scripts/vm/fetch-kernel), the base image (scripts/build-image) as a
# read-only root disk (scripts/vm/build-rootfs-image), an initramfs
# (scripts/vm/build-initramfs) whose /init is tests/vm/test_init.c instead of
# sandbox-agent — then boots it RUNS times with QEMU -M microvm and checks,
# through the agent's virtio-serial port, that the guest loaded its modules,
# mounted the root read-only with an overlay on a sparse scratch disk,
# switched into it, found the image's files with root/app ownership, ran
# python3 from it, and powered off (QEMU exits 0).
#
# Prints per run and as p50 over the runs:
#   hello    QEMU start -> "hello" on the agent socket (boot-to-agent)
#   ready    QEMU start -> root mounted, overlay on /, checks done
#   cpu      CPU seconds QEMU had used at "hello" (less noisy than wall time
#            on a shared host)
#   python3  a cold `python3 -c 'import json'` in the guest
#   rss      QEMU's VmRSS with the guest idle (before poweroff), and its
#            anonymous part (what one more VM costs: the rest is file pages
#            shared with every other VM, like the PVH kernel image)
#   poweroff "poweroff" sent -> QEMU exited
# Never asserts on time.
#
# Environment:
#   RUNS=5                   boots to time
#   ACCEL=tcg                tcg (default) or kvm — kvm only where a probe VM
#                            really boots (docs/microvm.md); figures are
#                            labelled with the accelerator
#   ROOTFS_FORMAT=erofs      erofs | ext4 (the root disk's filesystem)
#   ROOTFS_COMPRESS=none     none | lz4 | lz4hc (erofs only)
#   UPPER=disk               disk (ext4 on a sparse 10 GB scratch image) | tmpfs
#   KERNEL=pvh               pvh (vmlinux, when fetch-kernel extracted it) | bzimage
#   DEBUG=1                  serial console on ttyS0, kernel log in $WORK/console-N.log
#   SANDBOXD_VM_WORK         work dir (default build-vm/smoke)
#   SANDBOXD_KERNEL_CACHE    kernel cache (default build-vm/kernel-cache)
#   SANDBOXD_TEST_ROOTFS     a built base image (default: built with
#                            scripts/build-image under build-vm/)
#
# Needs root, qemu-system-x86 (qemu-system-x86_64 and its microvm firmware),
# erofs-utils (or e2fsprogs for ext4), gcc, python3, and apt access the
# first time the kernel is fetched. Exits 77 (skipped) when a tool is
# missing, 1 when a boot fails.
set -euo pipefail

readonly SRC="$(cd "$(dirname "$0")/../.." && pwd)"
readonly WORK="$(realpath -m "${SANDBOXD_VM_WORK:-$SRC/build-vm/smoke}")"
readonly KCACHE="$(realpath -m "${SANDBOXD_KERNEL_CACHE:-$SRC/build-vm/kernel-cache}")"
readonly RUNS="${RUNS:-5}"
readonly ACCEL="${ACCEL:-tcg}"
readonly FORMAT="${ROOTFS_FORMAT:-erofs}"
readonly COMPRESS="${ROOTFS_COMPRESS:-none}"
readonly UPPER="${UPPER:-disk}"
readonly KERNEL_KIND="${KERNEL:-pvh}"
readonly DEBUG="${DEBUG:-0}"

skip() {
  echo "boot-smoke: SKIP: $*" >&2
  exit 77
}
[[ $EUID -eq 0 ]] || skip "needs root"
for tool in qemu-system-x86_64 gcc python3 apt-get dpkg-deb objcopy strip; do
  command -v "$tool" >/dev/null || skip "$tool is not installed"
done
case "$FORMAT" in
  erofs) command -v mkfs.erofs >/dev/null || skip "mkfs.erofs is not installed (erofs-utils)" ;;
  ext4) command -v mke2fs >/dev/null || skip "mke2fs is not installed (e2fsprogs)" ;;
  *) echo "boot-smoke: ROOTFS_FORMAT must be erofs or ext4" >&2; exit 2 ;;
esac
command -v mke2fs >/dev/null || skip "mke2fs is not installed (e2fsprogs)"

mkdir -p "$WORK"
log() { echo "boot-smoke: $*" >&2; }

# 1. The test init and the TSC helper.
gcc -static -Os -Wall -Wextra -Werror -o "$WORK/test-init" "$SRC/tests/vm/test_init.c"
gcc -O2 -Wall -Wextra -Werror -o "$WORK/tsc_khz" "$SRC/tests/vm/tsc_khz.c"

# 2. Kernel.
eval "$("$SRC/scripts/vm/fetch-kernel" "$KCACHE")"
kernel="$VMLINUZ"
if [[ "$KERNEL_KIND" == pvh && -n "$VMLINUX" ]]; then kernel="$VMLINUX"; fi
log "kernel $KERNEL_PACKAGE $KERNEL_VERSION ($KERNEL_RELEASE): $kernel"

# 3. Root disk from the base image.
rootfs="${SANDBOXD_TEST_ROOTFS:-}"
if [[ -z "$rootfs" ]]; then
  rootfs="$SRC/build-vm/image/rootfs"
  "$SRC/scripts/build-image" "$rootfs" >&2
fi
root_img="$WORK/root.$FORMAT"
[[ "$COMPRESS" != none ]] && root_img="$WORK/root-$COMPRESS.$FORMAT"
"$SRC/scripts/vm/build-rootfs-image" "$rootfs" "$root_img" --format "$FORMAT" --compress "$COMPRESS"

# 4. Initramfs: erofs.ko only when the root is erofs (ext4 is built in).
modules=virtio_mmio,virtio_blk,virtio_console,virtio_net,virtio_rng,overlay
[[ "$FORMAT" == erofs ]] && modules+=",erofs"
"$SRC/scripts/vm/build-initramfs" "$WORK/initrd" "$WORK/test-init" "$KERNEL_DIR" --modules "$modules"

# 5. Boot RUNS times.
append=(reboot=t panic=-1)
machine=microvm,x-option-roms=off,auto-kernel-cmdline=off
if [[ "$DEBUG" == 1 ]]; then
  append+=(console=ttyS0)
else
  # No console at all: under TCG every byte through the emulated UART costs.
  machine+=,isa-serial=off
  append+=(quiet 8250.nr_uarts=0)
fi
if [[ "$ACCEL" == tcg ]]; then
  # The guest's rdtsc is the host's TSC under TCG, but the guest can only
  # calibrate it against the emulated PIT, which fails on a loaded host and
  # leaves the guest without a clocksource (hang). Tell it the frequency.
  append+=(tsc=reliable "tsc_early_khz=$("$WORK/tsc_khz")")
fi
# No crypto self-tests at boot (~0.45 s of emulated CPU); no PCI bus on
# microvm; no i8042 either.
append+=(cryptomgr.notests pci=off i8042.noaux i8042.nokbd i8042.nopnp)
# After "--": arguments for /init.
append+=(-- "rootfs=$FORMAT" port=sandbox.agent root-serial=root scratch-serial=scratch "upper=$UPPER")

results="$WORK/results.jsonl"
: >"$results"
failed=0
for i in $(seq 1 "$RUNS"); do
  scratch="$WORK/scratch-$i.img"
  rm -f "$scratch"
  truncate -s 10G "$scratch"
  mke2fs -q -F -t ext4 -O ^has_journal -m 0 -L scratch "$scratch"

  qemu=(
    qemu-system-x86_64
    -M "$machine" -accel "$ACCEL" -cpu "$([[ $ACCEL == kvm ]] && echo host || echo qemu64)"
    -m 1280 -smp 2
    -nodefaults -no-user-config -display none -no-reboot
    -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny
    -kernel "$kernel" -initrd "$WORK/initrd" -append "${append[*]}"
    -drive "id=root,file=$root_img,format=raw,if=none,readonly=on"
    -device virtio-blk-device,drive=root,serial=root
    -drive "id=scratch,file=$scratch,format=raw,if=none,cache=unsafe,discard=unmap"
    -device virtio-blk-device,drive=scratch,serial=scratch
    -device virtio-serial-device,max_ports=2
    -chardev "socket,id=agent,path=$WORK/agent.sock,server=on,wait=off"
    -device virtserialport,chardev=agent,name=sandbox.agent
    -object rng-builtin,id=rng -device virtio-rng-device,rng=rng,max-bytes=4096,period=1000
  )
  if [[ "$DEBUG" == 1 ]]; then
    qemu+=(-serial "file:$WORK/console-$i.log")
  fi
  [[ $i == 1 ]] && log "command line: ${qemu[*]}"

  if out="$(python3 "$SRC/tests/vm/boot_harness.py" "$WORK/agent.sock" 120 -- "${qemu[@]}")"; then
    :
  else
    failed=1
  fi
  echo "$out" >>"$results"
  rm -f "$scratch"
done

python3 - "$results" "$ACCEL" "$RUNS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
accel = sys.argv[2]
ok = [r for r in rows if r["ok"]]
for i, r in enumerate(rows, 1):
    if r["ok"]:
        print(f"run {i}: hello {r['hello_s']:.3f}s  ready {r['ready_s']:.3f}s  cpu {r['hello_cpu_s']:.2f}s  "
              f"{r['idle'].split()[1]}  rss {r['rss_kb'] / 1024:.0f} MB (anon {r['rss_anon_kb'] / 1024:.0f})  poweroff {r['poweroff_s']:.3f}s")
        print(f"       guest: {r['hello']}")
    else:
        print(f"run {i}: FAILED: {r['error']}")
        if r.get("qemu_stderr"):
            print("       qemu: " + r["qemu_stderr"].strip().replace("\n", "\n       qemu: "))
if ok:
    med = lambda k: statistics.median(r[k] for r in ok)
    py = statistics.median(float(r["idle"].split("=")[1]) for r in ok)
    print(f"p50 over {len(ok)} boots ({accel}): boot-to-agent (QEMU start -> hello) {med('hello_s'):.3f}s, "
          f"ready {med('ready_s'):.3f}s, QEMU CPU at hello {med('hello_cpu_s'):.2f}s, "
          f"cold python3 {py:.3f}s, QEMU RSS idle {med('rss_kb') / 1024:.0f} MB "
          f"(anon {med('rss_anon_kb') / 1024:.0f} MB), "
          f"poweroff -> QEMU exit {med('poweroff_s'):.3f}s")
with open("/proc/loadavg") as f:
    print("host load average:", " ".join(f.read().split()[:3]))
print(f"{len(ok)} passed, {len(rows) - len(ok)} failed")
EOF
exit "$failed"

#!/bin/bash
# Usage: ops/pkuvm/run.sh 'COMMAND'     (from any directory; see ops/pkuvm/README.md)
#
# Runs COMMAND on an x86_64 CPU with memory protection keys (PKU). Why: V8 crashes on such CPUs
# when isolates are created or freed on threads that lack its protection key, and this machine's
# CPU has none (so KVM cannot offer them either); QEMU's TCG emulator with -cpu max has them.
#
# On first use it apt-get installs what it needs and builds a kernel + initramfs into the repo's
# .cache/pkuvm/ (rebuilt when the kernel or build-initramfs.sh changes). Each run boots the VM
# (host / read-only over virtio-9p, tmpfs /tmp, HOME=/tmp/home, .cache/pkuvm writable), runs
# COMMAND with bash in the caller's cwd, prints its stdout and stderr and exits with its status:
# 139 = SIGSEGV, 124 = timed out, 125 = the rig failed, 130 = interrupted.
# Knobs: PKUVM_TIMEOUT (s, 900)  PKUVM_CPU (max; max,-pku is the no-PKU control)  PKUVM_SMP (2)
#        PKUVM_MEM (4G)  PKUVM_RW_REPO=1 (whole repo writable)  PKUVM_KEEP=1 (keep the job dir)
#        PKUVM_VERBOSE=1 (print the guest console and the wall time)
set -u
PATH=$PATH:/usr/sbin:/sbin
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)
cache=$repo/.cache/pkuvm

die() { echo "pkuvm: $*" >&2; exit 125; }
[ $# -ge 1 ] || { echo "usage: $0 'COMMAND'" >&2; exit 2; }
case "$repo" in *[[:space:],]*) die "the repo path '$repo' has a space or comma; the VM cannot use it" ;; esac

# --- what it needs, installed on first use --------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q ' installed$'; }
ensure() {  # ensure PACKAGE... are installed
  local p missing=()
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "needs: apt-get install ${missing[*]} (run as root or install them)"
  echo "pkuvm: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
  } > "$cache.apt.log" 2>&1 || die "apt-get install ${missing[*]} failed; see $cache.apt.log"
  rm -f "$cache.apt.log"
}
kernel() {  # newest Debian kernel with both an image and modules (PKUVM_KVER overrides)
  if [ -n "${PKUVM_KVER:-}" ]; then echo "$PKUVM_KVER"; return; fi
  local f
  for f in /boot/vmlinuz-*-amd64; do
    [ -f "$f" ] && [ -d "/lib/modules/${f#/boot/vmlinuz-}" ] && echo "${f#/boot/vmlinuz-}"
  done | sort -V | tail -n 1
}
mkdir -p "$cache" || die "cannot create $cache"
ensure qemu-system-x86 linux-image-amd64 busybox-static cpio kmod
kver=$(kernel)
if [ -z "$kver" ] || [ ! -f "/boot/vmlinuz-$kver" ]; then
  die "no usable kernel in /boot (linux-image-amd64?)"
fi
if find "/lib/modules/$kver" -name '*.ko.xz' -print -quit | grep -q .; then ensure xz-utils; fi
if find "/lib/modules/$kver" -name '*.ko.zst' -print -quit | grep -q .; then ensure zstd; fi

# --- kernel + initramfs in .cache/pkuvm, rebuilt when the kernel or the builder changes ------
stamp="$kver $(sha256sum < "$here/build-initramfs.sh" | cut -c1-16)"
built() { [ -f "$cache/vmlinuz" ] && [ -f "$cache/initramfs.cpio.gz" ] &&
          [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; }
if ! built; then
  exec 9> "$cache/.lock"
  flock 9  # another run may be building it right now
  if ! built; then
    rm -f "$cache/stamp"
    "$here/build-initramfs.sh" "$kver" "$cache" || die "building the initramfs failed"
    echo "$stamp" > "$cache/stamp"
  fi
  exec 9>&-
fi

# --- one job: a directory shared with the guest ----------------------------------------------
tmo=${PKUVM_TIMEOUT:-900}
case "$tmo" in ''|*[!0-9]*) die "PKUVM_TIMEOUT must be a number of seconds" ;; esac
mkdir -p "$cache/jobs"
J=$(mktemp -d "$cache/jobs/job.XXXXXX") || die "cannot create a job directory"
chmod 755 "$J"
printf '%s\n' "$*" > "$J/cmd"
pwd -P > "$J/cwd"
echo $((tmo - 60 > 30 ? tmo - 60 : 30)) > "$J/timeout"  # the guest stops COMMAND before we kill qemu
if [ "${PKUVM_RW_REPO:-0}" = 1 ]; then rwpath=$repo; else rwpath=$cache; fi

t0=${EPOCHREALTIME/./}
timeout -k 10 "$tmo" qemu-system-x86_64 \
  -accel tcg,thread=multi,tb-size=1024 -cpu "${PKUVM_CPU:-max}" \
  -smp "${PKUVM_SMP:-2}" -m "${PKUVM_MEM:-4G}" \
  -nodefaults -display none -monitor none -no-reboot \
  -serial "file:$J/console.log" \
  -kernel "$cache/vmlinuz" -initrd "$cache/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 pkuvm.init=$here/guest-init.sh pkuvm.job=$J pkuvm.rwtag=pkuvmrw pkuvm.rwpath=$rwpath" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$rwpath,mount_tag=pkuvmrw,security_model=none,multidevs=remap" \
  < /dev/null 2> "$J/qemu.err" &
qpid=$!
interrupted=0
trap 'interrupted=1; kill -TERM "$qpid" 2>/dev/null' INT TERM HUP
wait "$qpid"; qrc=$?
while kill -0 "$qpid" 2>/dev/null; do wait "$qpid"; qrc=$?; done
trap - INT TERM HUP
t1=${EPOCHREALTIME/./}

[ -f "$J/stdout" ] && cat "$J/stdout"
[ -f "$J/stderr" ] && cat "$J/stderr" >&2
if [ "$interrupted" = 1 ]; then echo "pkuvm: interrupted" >&2; rc=130
elif [ -f "$J/rc" ]; then rc=$(cat "$J/rc")
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then echo "pkuvm: VM timed out after ${tmo}s" >&2; rc=124
else
  echo "pkuvm: the VM ended (qemu exit $qrc) without a result; console:" >&2
  cat "$J/console.log" "$J/qemu.err" >&2 2>/dev/null; rc=125
fi
if [ "${PKUVM_VERBOSE:-0}" = 1 ]; then
  echo "--- pkuvm console ---" >&2; cat "$J/console.log" "$J/qemu.err" >&2 2>/dev/null
  ms=$(((t1 - t0) / 1000))
  printf 'pkuvm: wall time %d.%01ds, exit %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$rc" >&2
fi
if [ "${PKUVM_KEEP:-0}" = 1 ]; then echo "pkuvm: job kept in $J" >&2; else rm -rf "$J"; fi
exit "$rc"

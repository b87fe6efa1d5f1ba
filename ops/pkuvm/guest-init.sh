#!/bin/bash
# PID 1 inside the ops/pkuvm VM (started by the initramfs's /init via switch_root).
#
# Why the VM: V8 crashes on CPUs with memory protection keys (PKU) when isolates are created or
# freed on threads that lack its protection key; this machine's CPU has none, so ops/pkuvm/run.sh
# boots QEMU/TCG with -cpu max, which has them, to reproduce and test that.
#
# The root is the host's / over read-only virtio-9p. This mounts tmpfs on /tmp, /var/tmp, /run,
# /dev/shm, mounts the writable share (tag pkuvm.rwtag) on pkuvm.rwpath, runs the job in
# pkuvm.job=<dir> (<dir>/cmd under bash, in <dir>/cwd), writes <dir>/stdout, stderr and rc,
# and powers the VM off. All paths come from the kernel command line.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mkdir -p /tmp/home  # /root stays read-only (it may hold the host's Python); HOME is on tmpfs
ip link set lo up 2>/dev/null
hostname pkuvm 2>/dev/null
off() { sync; echo o > /proc/sysrq-trigger; sleep 60; }

job="" rwtag="" rwpath=""
read -r -a args < /proc/cmdline
for a in "${args[@]}"; do
  case "$a" in
    pkuvm.job=*) job=${a#pkuvm.job=} ;;
    pkuvm.rwtag=*) rwtag=${a#pkuvm.rwtag=} ;;
    pkuvm.rwpath=*) rwpath=${a#pkuvm.rwpath=} ;;
  esac
done
if [ -z "$job" ] || [ -z "$rwtag" ] || [ -z "$rwpath" ]; then
  echo "pkuvm: kernel command line lacks pkuvm.job/rwtag/rwpath" > /dev/console; off
fi
mkdir -p "$rwpath" 2>/dev/null  # only matters if it lies under one of the tmpfs above
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "$rwtag" "$rwpath"; then
  echo "pkuvm: cannot mount writable share $rwtag on $rwpath" > /dev/console; off
fi
J=$job
if [ ! -f "$J/cmd" ]; then echo "pkuvm: no job in '$J'" > /dev/console; off; fi

export HOME=/tmp/home TERM=dumb LANG=C.UTF-8 TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1
export PKUVM=1 PKUVM_JOB="$J" PKUVM_CACHE="${J%/*/*}"
cwd=$(cat "$J/cwd" 2>/dev/null)
if ! cd "${cwd:-/}" 2>/dev/null; then
  echo "pkuvm: $cwd is not visible in the VM; running in /" >> "$J/stderr"; cd /
fi
gtimeout=$(cat "$J/timeout" 2>/dev/null || echo 0)
# The job runs in its own session (setsid) so job control and signals behave normally; the inner
# bash reports a signal death as 128+N (139 = SIGSEGV) instead of dying of it. timeout 0 = none.
# shellcheck disable=SC2016  # $1 and $2 are the inner bash's
setsid -w /bin/bash -c 'timeout -k 5 "$1" /bin/bash "$2"; exit $?' pkuvm "$gtimeout" "$J/cmd" \
  >> "$J/stdout" 2>> "$J/stderr" < /dev/null
rc=$?
echo "$rc" > "$J/rc.tmp" && mv "$J/rc.tmp" "$J/rc"
off

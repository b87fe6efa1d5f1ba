#!/bin/bash
# Usage: ops/pkuvm/build-initramfs.sh KERNEL_VERSION OUT_DIR   (run.sh calls it; you need not)
#
# Part of ops/pkuvm, which runs commands in a QEMU/TCG VM whose vCPU has memory protection keys
# (PKU): V8 crashes on such CPUs when isolates are created or freed on threads that lack its
# protection key, and this machine's CPU has none, so the VM provides them.
#
# Writes OUT_DIR/vmlinuz (the Debian kernel KERNEL_VERSION) and OUT_DIR/initramfs.cpio.gz: a
# static busybox plus that kernel's virtio/9p modules. Its /init mounts the host's / (virtio-9p,
# tag hostroot, read-only) and switch_root's into the script named by pkuvm.init= on the kernel
# command line (ops/pkuvm/guest-init.sh), so nothing in here depends on where the repo lives.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 KERNEL_VERSION OUT_DIR" >&2; exit 2; }
K=$1 OUT=$2
PATH=$PATH:/usr/sbin:/sbin
[ -f "/boot/vmlinuz-$K" ] || { echo "pkuvm: no /boot/vmlinuz-$K" >&2; exit 1; }
mkdir -p "$OUT"
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$D/bin/busybox"
for a in sh mount umount insmod mkdir switch_root cat echo sleep; do ln -s busybox "$D/bin/$a"; done

# Order matters: insmod does not resolve dependencies.
loaded=""
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         9pnet 9pnet_virtio netfs fscache 9p; do
  f=$(modinfo -k "$K" -F filename "$m" 2>/dev/null || true)
  case "$f" in
    "(builtin)") continue ;;
    *.ko) cp "$f" "$D/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$f" > "$D/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$D/lib/modules/$m.ko" ;;
    *) if [ "$m" = fscache ]; then continue; fi  # folded into netfs on newer kernels
       echo "pkuvm: module $m not found for kernel $K" >&2; exit 1 ;;
  esac
  loaded="$loaded $m"
done

cat > "$D/init" <<INIT
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in$loaded; do insmod /lib/modules/\$m.ko || echo "pkuvm: insmod \$m failed"; done
init=
for a in \$(cat /proc/cmdline); do
  case "\$a" in pkuvm.init=*) init=\${a#pkuvm.init=} ;; esac
done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /newroot; then
  echo "pkuvm: cannot mount host root"; echo o > /proc/sysrq-trigger; sleep 30
fi
if [ -z "\$init" ] || [ ! -f "/newroot\$init" ]; then
  echo "pkuvm: no guest init '\$init'"; echo o > /proc/sysrq-trigger; sleep 30
fi
umount /proc /sys /dev 2>/dev/null
exec switch_root /newroot /bin/bash "\$init"
INIT
chmod +x "$D/init"
(cd "$D" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initramfs.cpio.gz.tmp"
cp "/boot/vmlinuz-$K" "$OUT/vmlinuz.tmp"
mv "$OUT/initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
echo "pkuvm: built kernel + initramfs for $K in $OUT" >&2

#!/bin/sh
# /init of tsnproxy's test VMs (busybox sh; built into the initramfs by scripts/vm/images.ts).
# Loads the modules listed in /etc/tsnvm/modules (dependency order, resolved on the host),
# builds a root from the host's /usr and /etc (9p tags hostusr/hostetc, read-only) plus the
# read-write shares listed in /tsnvm/mounts ("<tag> <guest path> <ro|rw>"), runs
# /tsnvm/run.sh there with bash, and prints on the serial console:
#   ===TSNVM-START <token>===          when the test starts
#   ===TSNVM-EXIT <token> <code>===    when it ends (125 when the guest could not be set up)
# then powers off. /tsnvm/ (token, mounts, run.sh) is the per-run archive from scripts/vm/runner.ts.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null

TOKEN=$(cat /tsnvm/token 2>/dev/null)
fail() {
  echo "tsnvm: $*"
  echo "===TSNVM-EXIT $TOKEN 125==="
  poweroff -f
  exit 1
}

while read -r m; do insmod "$m" || echo "tsnvm: insmod $m failed"; done </etc/tsnvm/modules

P9="trans=virtio,version=9p2000.L,msize=512000"
R=/newroot
mount -t tmpfs -o mode=755 tmpfs $R || fail "tmpfs root"
mkdir -p $R/usr $R/etc $R/proc $R/sys $R/dev $R/run $R/tmp $R/root $R/var/tmp $R/var/lib $R/tsnvm
for l in bin sbin lib lib64; do ln -s usr/$l $R/$l; done
ln -s ../run $R/var/run
mount -t 9p -o $P9,ro,cache=loose hostusr $R/usr || fail "9p mount of the host's /usr"
mount -t 9p -o $P9,ro hostetc $R/etc || fail "9p mount of the host's /etc"
if [ -f /tsnvm/mounts ]; then
  while read -r tag path mode; do
    mkdir -p "$R$path" && mount -t 9p -o "$P9,$mode" "$tag" "$R$path" ||
      fail "9p mount of $tag at $path"
  done </tsnvm/mounts
fi
cp -a /tsnvm/. $R/tsnvm/
chmod 1777 $R/tmp $R/var/tmp

mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mount -t tmpfs tmpfs $R/run
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t bpf bpf $R/sys/fs/bpf || fail "bpffs"
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
ln -sf /proc/self/fd $R/dev/fd
hostname tsnvm
ip link set lo up

echo
echo "===TSNVM-START $TOKEN==="
chroot $R /usr/bin/env -i PATH=$PATH HOME=/root TERM=dumb /bin/bash /tsnvm/run.sh </dev/null 2>&1
rc=$?
echo
echo "===TSNVM-EXIT $TOKEN $rc==="
sync
poweroff -f

#!/usr/bin/env bash
# Builds, once, what every lab's HAProxy host is made from, under $CACHE_DIR/lab:
#  - a Debian bookworm minbase root that boots with systemd as PID 1 (systemd, systemd-sysv,
#    dbus) and runs openssh-server as ssh.service (no host keys, no machine id, no apt lists),
#  - a local apt repository with exactly the .debs that root needs to install $HOST_PACKAGES,
#    resolved by that root's own apt, so the hosts' `apt-get install` runs for real.
# Each is built only when missing: a new package list makes a new repository from the cached root.
source "$(dirname "$0")/common.sh"

if [ -s "$ROOTFS_TARBALL" ] && [ -s "$APT_REPO_DIR/Packages.gz" ]; then
  log "cached host root: $ROOTFS_TARBALL, packages: $APT_REPO_DIR"
  exit 0
fi

mkdir -p "$LAB_CACHE"
work=$(mktemp -d "$LAB_CACHE/build.XXXXXX")
root=$work/root
cleanup() {
  for m in $(mounts_under "$root"); do umount "$m" || umount -l "$m"; done
  if [ -n "$(mounts_under "$root")" ]; then echo "still mounted under $root; not removing it" >&2; return; fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

if [ -s "$ROOTFS_TARBALL" ]; then
  mkdir "$root"
  tar -C "$root" --numeric-owner -xzf "$ROOTFS_TARBALL"
else
  log "debootstrap bookworm minbase + systemd, dbus, openssh-server (about a minute)"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,openssh-server bookworm "$root" "$DEBIAN_MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  chroot "$root" apt-get clean   # drop debootstrap's own .debs
  rm -rf "$root"/var/lib/apt/lists/* "$root"/etc/ssh/ssh_host_* "$root/etc/resolv.conf"
  : > "$root/etc/resolv.conf"
  # Each lab host gets its own machine id at set-up (hack/lab/up.sh), not the one debootstrap made.
  : > "$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  log "packing the root"
  tar -C "$root" --numeric-owner -czf "$ROOTFS_TARBALL.tmp" .
  mv "$ROOTFS_TARBALL.tmp" "$ROOTFS_TARBALL"
fi

if [ ! -s "$APT_REPO_DIR/Packages.gz" ]; then
  log "resolving $HOST_PACKAGES with the root's own apt"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  chroot "$root" apt-get update -q >/dev/null
  # shellcheck disable=SC2086  # a list of package names
  chroot "$root" apt-get install -y -q --download-only --no-install-recommends $HOST_PACKAGES >/dev/null
  umount "$root/proc"
  rm -rf "$APT_REPO_DIR.tmp"
  mkdir -p "$APT_REPO_DIR.tmp"
  mv "$root"/var/cache/apt/archives/*.deb "$APT_REPO_DIR.tmp/"
  (cd "$APT_REPO_DIR.tmp" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages && gzip -9k Packages)
  rm -rf "$APT_REPO_DIR"
  mv "$APT_REPO_DIR.tmp" "$APT_REPO_DIR"
fi
log "cached $(du -h "$ROOTFS_TARBALL" | cut -f1) host root and $(find "$APT_REPO_DIR" -name '*.deb' | wc -l) packages under $LAB_CACHE"

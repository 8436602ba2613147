#!/usr/bin/env bash
# Builds, once, what every lab's HAProxy host is made from, under $CACHE_DIR/lab:
#  - a Debian bookworm minbase root with openssh-server (no host keys, no apt lists),
#  - a local apt repository with exactly the .debs that root needs to install haproxy,
#    resolved by that root's own apt, so the host's `apt-get install haproxy` runs for real.
source "$(dirname "$0")/common.sh"

if [ -s "$ROOTFS_TARBALL" ] && [ -s "$APT_REPO_DIR/Packages.gz" ]; then
  log "cached host root: $ROOTFS_TARBALL"
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

log "debootstrap bookworm minbase + openssh-server (about a minute)"
debootstrap --variant=minbase --include=openssh-server bookworm "$root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

log "resolving haproxy's packages with the root's own apt"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
chroot "$root" apt-get clean   # drop debootstrap's own .debs: the repo gets only what haproxy needs
chroot "$root" apt-get update -q >/dev/null
chroot "$root" apt-get install -y -q --download-only --no-install-recommends haproxy >/dev/null
rm -rf "$APT_REPO_DIR.tmp"
mkdir -p "$APT_REPO_DIR.tmp"
mv "$root"/var/cache/apt/archives/*.deb "$APT_REPO_DIR.tmp/"
(cd "$APT_REPO_DIR.tmp" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null > Packages && gzip -9k Packages)
umount "$root/proc"

chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/etc/ssh/ssh_host_* "$root/etc/resolv.conf"
: > "$root/etc/resolv.conf"

log "packing the root"
tar -C "$root" --numeric-owner -czf "$ROOTFS_TARBALL.tmp" .
rm -rf "$APT_REPO_DIR"
mv "$APT_REPO_DIR.tmp" "$APT_REPO_DIR"
mv "$ROOTFS_TARBALL.tmp" "$ROOTFS_TARBALL"
log "cached $(du -h "$ROOTFS_TARBALL" | cut -f1) host root and $(ls "$APT_REPO_DIR"/*.deb | wc -l) packages under $LAB_CACHE"

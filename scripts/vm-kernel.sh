# Sourced by scripts/vm-boot (and to be by scripts/vm): Debian's newest 6.1
# kernel image package, fetched once into $CACHE; sets K (its unpacked
# tree) and KVER.
KPKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1)
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -1); fi
KVER=${KPKG#linux-image-}; KVER=${KVER%-unsigned}
K=$CACHE/kernel-$KVER
if [ ! -f "$K/boot/vmlinuz-$KVER" ]; then
  echo "vm: fetching $KPKG" >&2
  rm -rf "$K" "$CACHE"/*.deb
  (cd "$CACHE" && apt-get download "$KPKG" >/dev/null 2>&1)
  dpkg-deb -x "$CACHE"/linux-image-*.deb "$K.tmp" && depmod -b "$K.tmp" "$KVER" && mv "$K.tmp" "$K"
  rm -f "$CACHE"/*.deb
fi
mods() { for m in "$@"; do modprobe -d "$K" -S "$KVER" --show-depends "$m" 2>/dev/null; done | awk '$1=="insmod" {print $2}' | awk '!seen[$0]++'; }

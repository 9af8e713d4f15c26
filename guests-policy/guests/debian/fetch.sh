#!/usr/bin/env bash
# Fetches the real Debian 12 (bookworm) i386 guest: the kernel from linux-image-686 (followed to
# its versioned linux-image-6.1.0-*-686 dependency) and busybox from busybox-static.
#
# Everything goes into a cache outside the repository:
#   ${SECUREVMM_GUEST_CACHE:-~/.cache/securevmm/debian}/
#     apt/            private apt state (sources copied from the host, i386 indexes)
#     debs/           the downloaded .deb files
#     root/           the packages extracted with dpkg-deb -x
#     vmlinuz         the kernel (a bzImage)            -> root/boot/vmlinuz-<ver>
#     busybox         the static busybox binary          -> root/bin/busybox
#     modules/        the kernel's module tree           -> root/lib/modules/<ver>
#     kernel-version  <ver>
# The host's apt configuration and state are never written: apt runs with its own
# Dir::State, Dir::Cache, Dir::Etc::SourceList and Dir::Etc::SourceParts.
# Idempotent: a complete cache is reused without touching the network.
set -euo pipefail

CACHE="${SECUREVMM_GUEST_CACHE:-${HOME}/.cache/securevmm/debian}"
APT_DIR="$CACHE/apt"
DEB_DIR="$CACHE/debs"
ROOT_DIR="$CACHE/root"

say() { printf 'fetch.sh: %s\n' "$*" >&2; }

for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null || { say "error: '$tool' not found (a Debian-family host with apt is needed)"; exit 2; }
done

if [[ -f "$CACHE/kernel-version" && -f "$CACHE/vmlinuz" && -f "$CACHE/busybox" && -d "$CACHE/modules" ]]; then
    say "cached: kernel $(cat "$CACHE/kernel-version") in $CACHE"
    exit 0
fi

mkdir -p "$APT_DIR/etc/sources.list.d" "$APT_DIR/etc/preferences.d" "$APT_DIR/state/lists/partial" \
         "$APT_DIR/cache/archives/partial" "$DEB_DIR" "$ROOT_DIR"
: > "$APT_DIR/state/status"

# Copy the host's enabled sources (one-line .list and deb822 .sources files) into the private
# configuration; files renamed to anything else are disabled on the host and stay disabled here.
: > "$APT_DIR/etc/sources.list"
if [[ -f /etc/apt/sources.list ]]; then cp /etc/apt/sources.list "$APT_DIR/etc/sources.list"; fi
rm -f "$APT_DIR/etc/sources.list.d/"*
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    cp "$f" "$APT_DIR/etc/sources.list.d/"
done
shopt -u nullglob

APT_OPTS=(
    -o "APT::Architecture=i386"
    -o "APT::Architectures::=i386"
    -o "Dir::State=$APT_DIR/state"
    -o "Dir::State::status=$APT_DIR/state/status"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::Etc::SourceList=$APT_DIR/etc/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/etc/sources.list.d"
    -o "Dir::Etc::Preferences=$APT_DIR/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$APT_DIR/etc/preferences.d"
    -o "Debug::NoLocking=1"
)
# apt drops privileges to _apt for downloads; that user cannot enter a root-owned private cache.
if [[ "$(id -u)" == 0 ]]; then APT_OPTS+=(-o "APT::Sandbox::User=root"); fi

say "updating private apt indexes (i386) in $APT_DIR"
if ! apt-get "${APT_OPTS[@]}" -q update >&2; then
    # A mirror mid-sync can fail one index (e.g. the security suite); the main suite may still
    # carry both packages. The dependency lookup below fails clearly if it does not.
    say "warning: apt-get update reported errors; continuing with the indexes it did fetch"
fi

# linux-image-686 is a metapackage; its Depends names the versioned kernel package.
KPKG="$(apt-cache "${APT_OPTS[@]}" depends linux-image-686 \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-686\)$/\1/p' | head -n 1)"
if [[ -z "$KPKG" ]]; then
    say "error: could not find the versioned kernel that linux-image-686 depends on"
    exit 1
fi
say "linux-image-686 -> $KPKG"

say "downloading $KPKG busybox-static into $DEB_DIR"
( cd "$DEB_DIR" && apt-get "${APT_OPTS[@]}" -q download "$KPKG" busybox-static >&2 )

for deb in "$DEB_DIR"/*.deb; do
    say "extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$ROOT_DIR"
done

KVER="${KPKG#linux-image-}"
if [[ ! -f "$ROOT_DIR/boot/vmlinuz-$KVER" ]]; then
    say "error: $ROOT_DIR/boot/vmlinuz-$KVER missing after extraction"
    exit 1
fi
if [[ ! -x "$ROOT_DIR/bin/busybox" ]]; then
    say "error: $ROOT_DIR/bin/busybox missing after extraction"
    exit 1
fi

ln -sfn "root/boot/vmlinuz-$KVER" "$CACHE/vmlinuz"
ln -sfn "root/bin/busybox" "$CACHE/busybox"
ln -sfn "root/lib/modules/$KVER" "$CACHE/modules"
printf '%s\n' "$KVER" > "$CACHE/kernel-version.tmp"
mv "$CACHE/kernel-version.tmp" "$CACHE/kernel-version"
say "done: kernel $KVER"
say "  vmlinuz: $CACHE/vmlinuz"
say "  busybox: $CACHE/busybox"
say "  modules: $CACHE/modules"

#!/usr/bin/env bash
# Prepares the two-desktop NetTop example (nettop-two-desktops.json) on this host, step by step,
# as the README describes: host networks, keys, signed Debian images and the signed policy.
# Run as root (TAP devices, network namespaces). Usage:
#   nettop-setup.sh [WORKDIR]        (default /var/lib/securevmm/nettop)
# Environment: SECUREVMM   the securevmm command (default: securevmm on PATH)
#              SECUREVMM_GUEST_CACHE   the Debian guest cache (default ~/.cache/securevmm/debian)
#              SECUREVMM_STATE   put audit logs and rollback state under this directory instead of
#                                /var/log/securevmm and /var/lib/securevmm (tests, trials)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-/var/lib/securevmm/nettop}
cache=${SECUREVMM_GUEST_CACHE:-$HOME/.cache/securevmm/debian}
read -r -a svmm <<<"${SECUREVMM:-securevmm}"

if [ ! -f "$cache/vmlinuz" ]; then
  echo "nettop-setup: no Debian guest in $cache: run guests-policy/guests/debian/fetch.sh first" >&2
  exit 2
fi
mkdir -p "$work/images"
cd "$work"

echo "1. host networks: a namespace and a bridge per network, the host's address on each bridge"
setup_net() { # namespace bridge address
  ip netns list | grep -qx "$1\( .*\)\?" || ip netns add "$1"
  ip -n "$1" link show "$2" >/dev/null 2>&1 || ip -n "$1" link add "$2" type bridge
  ip -n "$1" addr replace "$3" dev "$2"
  ip -n "$1" link set "$2" up
}
setup_net secret br-secret 10.20.0.1/24
setup_net public br-public 192.168.50.1/24

echo "2. keys: the administrator signs the policy, each build team signs its image"
for k in admin secret-release public-release; do
  [ -f "$k.key" ] || "${svmm[@]}" keygen --out "$k" >/dev/null
done

echo "3. images: Debian's kernel and a busybox initramfs, packed and signed"
"${svmm[@]}" guest debian-initramfs --cache "$cache" -o images/initramfs.cpio
"${svmm[@]}" image pack -o images/secret-desktop.svmi --name secret-desktop --image-version 1 --kind linux \
  --kernel "$cache/vmlinuz" --initrd images/initramfs.cpio --cmdline "console=ttyS0 quiet" --sealed
"${svmm[@]}" image sign images/secret-desktop.svmi -k secret-release.key
"${svmm[@]}" image pack -o images/public-desktop.svmi --name public-desktop --image-version 1 --kind linux \
  --kernel "$cache/vmlinuz" --initrd images/initramfs.cpio --cmdline "console=ttyS0 quiet"
"${svmm[@]}" image sign images/public-desktop.svmi -k public-release.key

echo "4. policy: the example with this host's keys (and state directory), signed by the administrator"
public_of() { awk '/^public:/ { print $2 }' "$1.pub"; }
id_of() { awk '/^id:/ { print $2 }' "$1.pub"; }
sed_args=(
  -e "s|mtuNqqUufASNvzdN3ufBDXrfoBtimMgS2n+fE2VMVIg=|$(public_of secret-release)|"
  -e "s|8a9d0b4863962454|$(id_of secret-release)|"
  -e "s|XwAjKkALEy062wYLP/DvSmui9e8bugw1UDTSSMLC14E=|$(public_of public-release)|"
  -e "s|5fba5a6dddda7287|$(id_of public-release)|"
)
if [ -n "${SECUREVMM_STATE:-}" ]; then
  sed_args+=(-e "s|/var/log/securevmm|$SECUREVMM_STATE/log|g" -e "s|/var/lib/securevmm|$SECUREVMM_STATE/lib|g")
fi
sed "${sed_args[@]}" "$here/nettop-two-desktops.json" > policy.json
"${svmm[@]}" policy sign policy.json -k admin.key
"${svmm[@]}" policy check policy.json --policy-key admin.pub --images

echo
echo "ready: run both desktops with"
echo "  securevmm run $work/policy.json --policy-key $work/admin.pub"

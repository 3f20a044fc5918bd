#!/usr/bin/env bash
# prepare.sh: fetches and builds everything the QEMU end-to-end tests need.
#
#   e2e/prepare.sh            # idempotent; cached under $DRVKIT_E2E_CACHE
#
# Output (under $CACHE/current/): vmlinuz, initramfs.gz and env, a file of
# KEY=value lines the Go harness reads. Downloads are cached and reused: the
# kernel package is resolved at run time from linux-image-amd64 (Debian keeps
# only the current ABI in its archive, so a hard-coded version would break after
# the next security update), and a previously fetched kernel is reused when the
# archive cannot be asked.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${DRVKIT_E2E_CACHE:-$repo/.cache/e2e}
GO=${GO:-go}
mkdir -p "$CACHE/debs"
CACHE=$(cd "$CACHE" && pwd)
# One preparation per cache at a time (two `make e2e` in parallel would
# rebuild work/ and current/ under each other).
exec 9>"$CACHE/.lock"
flock 9
t0=$(date +%s.%N)
step() { awk -v a="$t0" -v b="$(date +%s.%N)" -v s="$1" 'BEGIN{printf "prepare: %-28s %6.1fs\n", s, b-a}'; }
die() { echo "prepare: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return 0
	is_root || return 1
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && apt_updated=1
}

# --- host tools -------------------------------------------------------------
need_pkgs=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_pkgs="$need_pkgs qemu-system-x86"

if [ -n "$need_pkgs" ]; then
	is_root || die "missing$need_pkgs: run 'sudo apt-get install --no-install-recommends$need_pkgs'"
	echo "prepare: installing$need_pkgs"
	apt_update || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need_pkgs >/dev/null ||
		die "apt-get install$need_pkgs failed"
fi
step "host tools"

# --- kernel and busybox from Debian's archive -------------------------------
# fetch PKG: downloads PKG's .deb into $CACHE/debs unless a file for it is there.
fetch() {
	local pkg=$1 deb
	deb=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | sort -V | tail -n1 || true)
	if [ -z "$deb" ]; then
		(cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null 2>"$CACHE/debs/apt.err") || {
			apt_update && (cd "$CACHE/debs" && apt-get download -q "$pkg" >/dev/null 2>"$CACHE/debs/apt.err")
		} || die "apt-get download $pkg failed: $(cat "$CACHE/debs/apt.err")"
		deb=$(ls "$CACHE/debs/${pkg}_"*.deb | sort -V | tail -n1)
	fi
	echo "$deb"
}

resolve_kernel() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9].*-amd64$/ {print $2; exit}'
}
kpkg=$(resolve_kernel || true)
if [ -z "$kpkg" ]; then
	apt_update || true
	kpkg=$(resolve_kernel || true)
fi
if [ -z "$kpkg" ]; then
	# No archive metadata (offline): reuse the newest kernel fetched before.
	kpkg=$(ls "$CACHE/debs/" | sed -n 's/^\(linux-image-[0-9][^_]*-amd64\)_.*\.deb$/\1/p' | sort -V | tail -n1)
	[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (apt-cache depends) and no kernel is cached"
	echo "prepare: archive unavailable, reusing cached $kpkg"
fi
kver=${kpkg#linux-image-}
kdeb=$(fetch "$kpkg")
bdeb=$(fetch busybox-static)
step "downloads ($kpkg)"

kdir=$CACHE/kernel-$kver
if [ ! -e "$kdir/.done" ]; then
	rm -rf "$kdir" && mkdir -p "$kdir"
	dpkg-deb -x "$kdeb" "$kdir"
	touch "$kdir/.done"
fi
# A new kernel ABI replaces the old one: drop the superseded ~400 MB.
for old in "$CACHE"/kernel-*; do
	[ "$old" = "$kdir" ] || [ ! -d "$old" ] || rm -rf "$old"
done
for old in "$CACHE"/debs/linux-image-*.deb; do
	[ "$old" = "$kdeb" ] || [ ! -e "$old" ] || rm -f "$old"
done
bb=$CACHE/busybox/bin/busybox
if [ ! -x "$bb" ]; then
	rm -rf "$CACHE/busybox" && mkdir -p "$CACHE/busybox"
	dpkg-deb -x "$bdeb" "$CACHE/busybox"
fi
[ -x "$bb" ] || die "busybox-static has no bin/busybox"
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -n1)
moddir=$kdir/lib/modules/$kver
[ -d "$moddir" ] || die "no module tree in $kdeb"
if [ ! -s "$moddir/modules.dep" ]; then
	# The .deb ships no modules.dep (the postinst would generate it).
	"$bb" depmod -b "$kdir" "$kver" || die "depmod failed"
fi
step "kernel extracted"

# --- guest agent: an ordinary dynamic cgo build -----------------------------
work=$CACHE/work
rm -rf "$work" && mkdir -p "$work/root"
(cd "$repo" && CGO_ENABLED=1 "$GO" build -trimpath -o "$work/root/e2e-guest" ./e2e/guest) || die "building the guest agent failed"
if [ -n "${DRVKIT_E2E_EXTRA_BINS:-}" ]; then
	# Later scenarios put drvctl and friends into the guest this way.
	for b in $DRVKIT_E2E_EXTRA_BINS; do cp "$b" "$work/root/bin-$(basename "$b")"; done
fi
step "guest agent built"

# --- initramfs --------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,mnt}
cp "$bb" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
# Every library the agent (and any extra binary) links, at the path the loader
# will look for it; a static binary lists none.
for f in "$root/e2e-guest" "$root"/bin-*; do
	[ -e "$f" ] || continue
	{ ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/.* \(0x/ {print $1}' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done

# Modules with their dependencies, in load order (dependencies first).
# hid-generic and usbhid (with hid, whose hidraw is built into hid.ko on
# Debian: CONFIG_HIDRAW=y) for QEMU's usb-kbd; hid-generic first, so that a
# keyboard already present at usbhid's probe is bound at once.
mods="xhci-pci usb-storage sd_mod sg virtio_pci virtio_scsi dummy_hcd libcomposite usb_f_mass_storage hid-generic usbhid"
declare -A seen=()
order=()
modpath() { # name -> relative path in modules.dep (dashes and underscores are equivalent)
	local n
	n=$(echo "$1" | sed 's/[-_]/[-_]/g')
	grep -E "(^|/)${n}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1 | cut -d: -f1
}
visit() {
	local rel=$1 d
	[ -n "${seen[$rel]:-}" ] && return 0
	seen[$rel]=1
	for d in $(grep -E "^${rel//./\\.}:" "$moddir/modules.dep" | cut -d: -f2); do visit "$d"; done
	order+=("$rel")
}
for m in $mods; do
	rel=$(modpath "$m")
	if [ -z "$rel" ]; then
		n=${m//-/_}
		grep -Eq "/(${m}|${n})\.ko" "$moddir/modules.builtin" 2>/dev/null && continue
		die "module $m is neither in modules.dep nor built in"
	fi
	visit "$rel"
done
: >"$root/etc/modules"
for rel in "${order[@]}"; do
	dst=$root/lib/modules/$kver/$rel
	mkdir -p "$(dirname "$dst")"
	case $rel in
	*.ko.xz) xz -dc "$moddir/$rel" >"${dst%.xz}"; rel=${rel%.xz} ;;
	*.ko.zst) zstd -qdc "$moddir/$rel" >"${dst%.zst}"; rel=${rel%.zst} ;;
	*.ko.gz) gzip -dc "$moddir/$rel" >"${dst%.gz}"; rel=${rel%.gz} ;;
	*) cp "$moddir/$rel" "$dst" ;;
	esac
	params=""
	# Parameters on the kernel command line do not reach a module loaded
	# by hand; without delay_use=0 the stick appears a second later.
	case $rel in */usb-storage.ko) params="delay_use=0" ;; esac
	echo "/lib/modules/$kver/$rel $params" >>"$root/etc/modules"
done

cat >"$root/init" <<'EOF'
#!/bin/sh
# PID 1 of the e2e guest: mount the pseudo file systems and hand over to the
# agent, which loads the modules itself (so it sees their uevents).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
for b in /bin-*; do [ -e "$b" ] && ln -s "$b" "/bin/${b#/bin-}"; done
exec /e2e-guest agent
echo "E2E init FAIL cannot exec /e2e-guest"
poweroff -f
EOF
chmod 755 "$root/init"
(cd "$root" && find . | sort | "$bb" cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initramfs.gz")
step "initramfs built"

cur=$CACHE/current
rm -rf "$cur" && mkdir -p "$cur"
cp "$vmlinuz" "$cur/vmlinuz"
mv "$work/initramfs.gz" "$cur/initramfs.gz"
cat >"$cur/env" <<EOF
KERNEL_PACKAGE=$kpkg
KERNEL_VERSION=$kver
KERNEL=$cur/vmlinuz
INITRD=$cur/initramfs.gz
QEMU=$(command -v qemu-system-x86_64)
MODULES=${#order[@]}
EOF
echo "prepare: ready: $kpkg, ${#order[@]} modules, initramfs $(du -h "$cur/initramfs.gz" | cut -f1)"
step "done"

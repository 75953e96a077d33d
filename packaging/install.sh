#!/bin/bash
# Installs an edgectl station from this checkout, or uninstalls it; `make install` runs this.
#
#   packaging/install.sh install [--no-venv]   as root; safe to run again (an upgrade is one)
#   packaging/install.sh uninstall             keeps /etc/edgectl, /var/lib/edgectl, the account
#
# What goes where (docs/operations.md, "Installing a station"):
#   /etc/sysusers.d/edgectl.conf    the account: user and group edgectl, member of dialout
#   /etc/edgectl/                   0750 root:edgectl; station.toml (from the example, never
#                                   overwritten) and modbus/ maps 0640 root:edgectl; certs/,
#                                   secrets/, keys/: private keys (*.key, secrets/*) 0600 edgectl
#   /var/lib/edgectl/               0750 edgectl:edgectl, the store's files 0640
#   /opt/edgectl/venv/              a venv on the system Python with edgectl installed from a
#                                   wheel; /usr/local/bin/edgectl links to its command
#   /opt/edgectl/share/             README.md and the example config, for reference
#   /etc/systemd/system/edgectl.service, /etc/modules-load.d/edgectl.conf
#
# Environment:
#   DESTDIR=DIR              stage into DIR, taken as a root file system, instead of /: the
#                            account goes into DIR/etc/passwd and DIR/etc/group (with
#                            systemd-sysusers --root, when run as root), files get the numeric
#                            ids it has there, and nothing on this machine is touched
#                            (no systemctl, no modprobe). Not root: no account and no chown.
#   PREFIX=/opt/edgectl      where the venv and share/ go
#   EDGECTL_PYTHON=/usr/bin/python3   the system Python the venv is built on (3.11 or later)
#   EDGECTL_INSTALL_VENV=0   the same as --no-venv: everything but the venv
#   EDGECTL_WHEELHOUSE=DIR   offline: take edgectl's dependencies from the wheels in DIR only
#   EDGECTL_PIP_ARGS="..."   more arguments for pip when fetching them (an index, a proxy)
set -euo pipefail
umask 022 # the venv and share/ must be readable by user edgectl whatever root's umask is

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
PREFIX=${PREFIX:-/opt/edgectl}
DESTDIR=${DESTDIR:-}
python=${EDGECTL_PYTHON:-/usr/bin/python3}
with_venv=${EDGECTL_INSTALL_VENV:-1}
action=${1:-}
shift || true

say() { printf 'edgectl %s: %s\n' "${action:-install}" "$*"; }
die() {
	printf 'edgectl %s: %s\n' "${action:-install}" "$*" >&2
	exit 1
}
is_root() { [ "$(id -u)" = 0 ]; }
systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

case $PREFIX in
/?*) PREFIX=${PREFIX%/} ;;
*) die "PREFIX must be an absolute directory other than / (not '$PREFIX')" ;;
esac
if [ -n "$DESTDIR" ]; then
	mkdir -p "$DESTDIR"
	DESTDIR=$(cd "$DESTDIR" && pwd)
	[ "$DESTDIR" != / ] || DESTDIR=
fi

etc=$DESTDIR/etc/edgectl
state=$DESTDIR/var/lib/edgectl
opt=$DESTDIR$PREFIX
unit=$DESTDIR/etc/systemd/system/edgectl.service
sysusers=$DESTDIR/etc/sysusers.d/edgectl.conf
modules=$DESTDIR/etc/modules-load.d/edgectl.conf
command_link=$DESTDIR/usr/local/bin/edgectl
owners=no # set by accounts(): whether files get their owners

work=
cleanup() { [ -z "$work" ] || rm -rf "$work"; }
trap cleanup EXIT

# The numeric id of a user or group in the target's own account database.
id_of() { # passwd|group NAME
	local line
	if [ "$2" = root ]; then
		echo 0
		return
	fi
	if [ -z "$DESTDIR" ]; then
		line=$(getent "$1" "$2") || die "no $1 entry for $2"
	else
		line=$(grep -m1 "^$2:" "$DESTDIR/etc/$1") || die "no $2 in $DESTDIR/etc/$1"
	fi
	printf '%s\n' "$line" | cut -d: -f3
}

own() { # USER:GROUP PATH...
	[ "$owners" = yes ] || return 0
	local user=${1%:*} group=${1#*:}
	shift
	[ $# -gt 0 ] || return 0
	chown -h "$(id_of passwd "$user"):$(id_of group "$group")" "$@"
}

put() { # MODE USER:GROUP SOURCE DEST: a file of ours, replaced on every install
	install -D -m "$1" "$3" "$4"
	own "$2" "$4"
}

preflight() {
	[ -n "$DESTDIR" ] || is_root || die "run as root (sudo make install), or stage with DESTDIR=DIR"
	if [ -d "$opt/.git" ] || [ "$src" = "$opt" ]; then
		die "$PREFIX holds a git checkout (the old install steps): move it elsewhere" \
			"(e.g. /usr/local/src/edgectl) and run make install there; $PREFIX is the install's"
	fi
	if systemd_running && [ "$with_venv" != 0 ] && systemctl is-active --quiet edgectl.service; then
		die "edgectl is running: stop it first (systemctl stop edgectl), install, then start it"
	fi
	[ "$with_venv" = 0 ] || check_python
}

check_python() {
	[ -x "$python" ] || die "no $python (apt-get install python3)"
	"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "$python is $("$python" -V 2>&1); edgectl needs Python 3.11 or later"
	if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
		if ! is_root || ! command -v apt-get >/dev/null; then
			die "$python has no venv module (apt-get install python3-venv)"
		fi
		say "installing python3-venv"
		apt-get update -qq && apt-get install -y -qq python3-venv
	fi
}

accounts() {
	put 0644 root:root "$here/edgectl.sysusers" "$sysusers"
	if ! is_root; then
		say "not root: no account edgectl, and files keep your ownership"
		return
	fi
	if command -v systemd-sysusers >/dev/null; then
		if [ -n "$DESTDIR" ]; then
			systemd-sysusers --root="$DESTDIR" "$sysusers"
		else
			systemd-sysusers "$sysusers"
		fi
	elif [ -z "$DESTDIR" ]; then
		getent group dialout >/dev/null || groupadd --system dialout
		getent passwd edgectl >/dev/null ||
			useradd --system --user-group --home-dir /var/lib/edgectl --no-create-home \
				--shell /usr/sbin/nologin --comment "edgectl forecourt controller" edgectl
		usermod -a -G dialout edgectl
	else
		say "no systemd-sysusers here: no account in $DESTDIR, and files keep your ownership"
		return
	fi
	owners=yes
}

config() {
	local dir map name
	for dir in "$etc" "$etc/modbus" "$etc/certs" "$etc/secrets" "$etc/keys"; do
		install -d -m 0750 "$dir"
		chmod 0750 "$dir"
		own root:edgectl "$dir"
	done
	if [ -e "$etc/station.toml" ]; then
		say "kept $etc/station.toml"
	else
		install -m 0640 "$src/config/station.example.toml" "$etc/station.toml"
		say "wrote $etc/station.toml from the example: edit it for this site"
	fi
	# The register maps the config names, resolved beside it (modbus/...). A site may have
	# edited one: an existing map is kept, the shipped one is in $PREFIX/share/config/modbus.
	for map in "$src"/config/modbus/*.toml; do
		name=$(basename "$map")
		[ -e "$etc/modbus/$name" ] || install -m 0640 "$map" "$etc/modbus/$name"
	done
	# Modes and owners are made right on every run, also for files put there by hand.
	find "$etc" -type f ! -name '*.key' ! -path "$etc/secrets/*" -exec chmod 0640 {} +
	if [ "$owners" = yes ]; then
		find "$etc" -type f ! -name '*.key' ! -path "$etc/secrets/*" \
			-exec chown "0:$(id_of group edgectl)" {} +
	fi
	# Private keys and passwords: for the daemon's eyes only.
	find "$etc" -type f \( -name '*.key' -o -path "$etc/secrets/*" \) -exec chmod 0600 {} +
	if [ "$owners" = yes ]; then
		find "$etc" -type f \( -name '*.key' -o -path "$etc/secrets/*" \) \
			-exec chown "$(id_of passwd edgectl):$(id_of group edgectl)" {} +
	fi
}

store_dir() {
	install -d -m 0750 "$state"
	chmod 0750 "$state"
	own edgectl:edgectl "$state"
	# A store left by an older install (0644) or by a restore run as root: the daemon's again.
	find "$state" -mindepth 1 -type d -exec chmod 0750 {} +
	find "$state" -mindepth 1 -type f -exec chmod 0640 {} +
	if [ "$owners" = yes ]; then
		find "$state" -mindepth 1 -exec chown -h "$(id_of passwd edgectl):$(id_of group edgectl)" {} +
	fi
}

share() {
	local map
	put 0644 root:root "$src/README.md" "$opt/share/README.md"
	put 0644 root:root "$src/config/station.example.toml" "$opt/share/config/station.example.toml"
	for map in "$src"/config/modbus/*.toml; do
		put 0644 root:root "$map" "$opt/share/config/modbus/$(basename "$map")"
	done
}

venv() {
	local target=$opt/venv fetch=() extra=() wheel
	if [ "$with_venv" = 0 ]; then
		say "no venv (--no-venv)"
		return
	fi
	work=$(mktemp -d)
	mkdir "$work/src"
	cp -R "$src/pyproject.toml" "$src/README.md" "$src/edgectl" "$src/drivers" "$work/src/"
	find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
	if [ -n "${EDGECTL_WHEELHOUSE:-}" ]; then
		fetch+=(--no-index --find-links "$EDGECTL_WHEELHOUSE")
	fi
	if [ -n "${EDGECTL_PIP_ARGS:-}" ]; then
		read -r -a extra <<<"$EDGECTL_PIP_ARGS"
		fetch+=("${extra[@]}")
	fi
	# Everything is fetched and built before the installed venv is touched, so a download
	# that fails leaves the old one as it was.
	say "building edgectl and its dependencies ($python)"
	"$python" -m venv "$work/build"
	"$work/build/bin/pip" wheel --quiet --wheel-dir "$work/wheels" "${fetch[@]}" "$work/src"
	wheel=$(find "$work/wheels" -name 'edgectl-*.whl' | head -n1)
	[ -n "$wheel" ] || die "pip built no edgectl wheel"
	say "installing $(basename "$wheel") into $PREFIX/venv"
	"$python" -m venv --clear "$target"
	"$target/bin/pip" install --quiet --no-index --find-links "$work/wheels" "$wheel"
	if [ -n "$DESTDIR" ]; then
		# A venv knows its own path (scripts' #! lines, activate, pyvenv.cfg): the final one.
		grep -rlIF -- "$target" "$target/bin" "$target/pyvenv.cfg" | while IFS= read -r file; do
			sed -i "s|$target|$PREFIX/venv|g" "$file"
		done
	fi
}

service() {
	local tmp module kept=()
	tmp=$(mktemp)
	sed "s|/opt/edgectl|$PREFIX|g" "$src/systemd/edgectl.service" >"$tmp"
	put 0644 root:root "$tmp" "$unit"
	rm -f "$tmp"
	while IFS= read -r module; do
		case $module in '' | '#'*) continue ;; esac
		# Only what this kernel has (a missing module fails systemd-modules-load at boot);
		# loaded now too, for the first start. A staged root keeps them all.
		if [ -n "$DESTDIR" ] || modprobe -q "$module" 2>/dev/null; then
			kept+=("$module")
		fi
	done <"$here/edgectl.modules-load"
	tmp=$(mktemp)
	{
		grep '^#' "$here/edgectl.modules-load"
		[ ${#kept[@]} -eq 0 ] || printf '%s\n' "${kept[@]}"
	} >"$tmp"
	put 0644 root:root "$tmp" "$modules"
	rm -f "$tmp"
	mkdir -p "$(dirname "$command_link")"
	ln -sfn "$PREFIX/venv/bin/edgectl" "$command_link"
	if systemd_running; then
		systemctl daemon-reload
		systemctl enable --quiet edgectl.service
		say "edgectl.service enabled; after editing /etc/edgectl/station.toml" \
			"(edgectl config check): systemctl start edgectl"
	elif [ -z "$DESTDIR" ]; then
		say "systemd is not running here: the unit is installed but not enabled"
	fi
}

install_all() {
	preflight
	accounts
	config
	store_dir
	share
	venv
	service
	say "done${DESTDIR:+ (staged in $DESTDIR)}"
}

uninstall_all() {
	[ -n "$DESTDIR" ] || is_root || die "run as root (sudo make uninstall)"
	if systemd_running; then
		systemctl disable --now --quiet edgectl.service 2>/dev/null || true
	fi
	rm -f "$unit" "$sysusers" "$modules"
	if [ "$(readlink "$command_link" 2>/dev/null)" = "$PREFIX/venv/bin/edgectl" ]; then
		rm -f "$command_link"
	fi
	rm -rf "$opt/venv" "$opt/share"
	rmdir "$opt" 2>/dev/null || true
	if systemd_running; then
		systemctl daemon-reload
	fi
	say "removed edgectl; kept /etc/edgectl (the config), /var/lib/edgectl (the store) and" \
		"user edgectl: remove them by hand once the station's data is safe elsewhere"
}

for arg in "$@"; do
	case $arg in
	--no-venv) with_venv=0 ;;
	*) die "unknown option $arg (usage: install.sh install [--no-venv] | uninstall)" ;;
	esac
done
case $action in
install) install_all ;;
uninstall) uninstall_all ;;
*) die "usage: install.sh install [--no-venv] | uninstall" ;;
esac

#!/usr/bin/env bash
# Runs the OpenRC service scripts of an installed tree (install.sh --init
# openrc into ROOT) under the host's OpenRC (Debian's openrc package), in
# namespaces of their own: a private mount namespace whose /run, /var/lib and
# /var/log are empty tmpfs, whose /usr/sbin, /etc/init.d and /etc/default are
# overlays with ROOT's files on top, and a network namespace with only lo.
# Nothing on the host changes. For each service it prints CHECK <name> ok|FAIL.
#
#   unshare --mount --net --pid --fork --propagation private bash openrc.sh ROOT
set -uo pipefail
root=$1
check() { # name command...
	local name=$1; shift
	if "$@"; then echo "CHECK $name ok"; else echo "CHECK $name FAIL"; fi
}
# This PID namespace's /proc: pgrep and /proc/PID see only its processes.
mount -t proc proc /proc || exit 1
for d in /run /var/lib /var/log; do mount -t tmpfs tmpfs "$d" || exit 1; done
# The state directories that openrc(8) makes at boot.
for d in daemons exclusive failed hotplugged inactive options scheduled started starting stopping tmp wasinactive; do
	mkdir -p "/run/openrc/$d"
done
mkdir -p /run/lock
# OpenRC did not boot this system: softlevel says it did, for this /run only.
touch /run/openrc/softlevel
ovl=$(mktemp -d)
for d in usr/sbin etc/init.d etc/default; do
	[ -d "/$d" ] || { echo "no /$d on the host" >&2; exit 1; }
	mount -t overlay overlay -o "lowerdir=$root/$d:/$d" "/$d" || exit 1
done
ip link set lo up

# addrregd, with its metrics on loopback; the shield and the server need
# interfaces and are only checked to start and stop with bad options.
cat > "$ovl/addrregd" <<'CONF'
ADDRREGD_OPTS="--metrics-listen [::1]:9547 --log-level debug"
CONF
mount --bind "$ovl/addrregd" /etc/default/addrregd

svc=/etc/init.d/addrregd
check addrregd-start "$svc" start
check addrregd-status "$svc" status
# addrregd's PID: not a zombie that this namespace's init (this shell) has
# not reaped yet.
live_pid() {
	local p
	for p in $(pgrep -x addrregd); do
		[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] || echo "$p"
	done
}
pid=$(live_pid)
check addrregd-pid test -n "$pid" -a "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/sbin/addrregd
# The daemon is up when its control socket answers.
for _ in $(seq 50); do /usr/sbin/addrregd status >/dev/null 2>&1 && break; sleep 0.1; done
check addrregd-control-socket /usr/sbin/addrregd status
check addrregd-options grep -q -- '--metrics-listen' "/proc/$pid/cmdline"
check addrregd-state-dir test -d /var/lib/addrregd
# supervise-daemon restarts a daemon that dies (respawn_delay=2).
kill -KILL "$pid"
for _ in $(seq 60); do
	npid=$(live_pid)
	[ -n "$npid" ] && [ "$npid" != "$pid" ] && break
	sleep 0.1
done
check addrregd-respawned test -n "$npid" -a "$npid" != "$pid"
pid=$npid
for _ in $(seq 50); do /usr/sbin/addrregd status >/dev/null 2>&1 && break; sleep 0.1; done
check addrregd-respawned-answers /usr/sbin/addrregd status
check addrregd-reload "$svc" reload
sleep 0.5
check addrregd-same-pid-after-reload test "$(live_pid)" = "$pid"
check addrregd-stop "$svc" stop
# Gone, or a zombie that this namespace's init (this shell) has not reaped.
gone() { local st; st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null); [ -z "$st" ] || [ "$st" = Z ]; }
for _ in $(seq 50); do gone && break; sleep 0.1; done
check addrregd-gone gone
check addrregd-stopped sh -c "! $svc status >/dev/null 2>&1"
check addrregd-log test -s /var/log/addrregd.log

# The server and the shield need interfaces to serve: their scripts are
# only parsed by openrc-run and asked for their description.
for s in addrreg-refserver dhcp6-shield; do
	check "$s-describe" sh -c "/etc/init.d/$s describe 2>&1 | grep -q 'RFC'"
done
echo "LOG"; cat /var/log/addrregd.log

#!/usr/bin/env bash
# make demo: a throwaway IPv6 network in namespaces.
#   router  radvd advertising 2001:db8:1::/64 and fd00:db8:1::/64 with the O flag
#   server  addrreg-refserver, the registration server with leasequery
#   host    addrregd, registering its SLAAC (stable + temporary), ULA and static addresses
# It then tells a short story (a new address, a lifetime change, an address removed)
# and streams the server's registration log until Ctrl-C, then tears everything down.
set -euo pipefail
BIN=${1:-bin}
BIN=$(cd "$BIN" && pwd)
# ADDRREG_DEMO_ID names the namespaces (tests pick it); default: by PID.
ID=${ADDRREG_DEMO_ID:-demo$$}
SW=ar${ID}-sw R=ar${ID}-router S=ar${ID}-server H=ar${ID}-host
WORK=$(mktemp -d /tmp/addrreg-demo.XXXXXX)
PIDS=()
MADE=() # the namespaces this demo made: the only ones it removes

say() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mkns() { ip netns add "$1" && MADE+=("$1"); }
# pause sleeps in the background: a signal's trap runs at once, not after
# a foreground sleep ends.
pause() { sleep "$1" & wait $!; }

# Whatever ends the demo (Ctrl-C, SIGTERM, SIGHUP when the terminal closes,
# an error midway) ends here, and the teardown comes first: with
# `make demo | tee log` interrupted, tee is gone and any write to stdout
# fails (SIGPIPE, EPIPE), so nothing here may stop on one.
cleanup() {
	local rc=$?
	trap - EXIT
	trap '' INT TERM HUP PIPE
	set +e
	for p in "${PIDS[@]}" $(jobs -p); do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	# Whatever still runs inside the namespaces (radvd's privilege-separated
	# child outlives its parent for a moment) goes too: TERM, then KILL.
	for sig in TERM KILL; do
		left=$(for ns in "${MADE[@]}"; do ip netns pids "$ns" 2>/dev/null; done)
		[ -z "$left" ] && break
		kill -s $sig $left 2>/dev/null
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			left=$(for ns in "${MADE[@]}"; do ip netns pids "$ns" 2>/dev/null; done)
			[ -z "$left" ] && break
			sleep 0.2
		done
	done
	for ns in "${MADE[@]}"; do ip netns del "$ns" 2>/dev/null; done
	[ -n "${KEEP:-}" ] || rm -rf "$WORK"
	{
		say "torn down"
		[ -n "${KEEP:-}" ] && echo "logs kept in $WORK"
		echo "done: namespaces removed"
	} 2>/dev/null
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
# A closed stdout must not kill the script before its trap runs: writes fail instead.
trap '' PIPE

say "building the network (namespaces $SW, $R, $S, $H)"
mkns "$SW"
inns "$SW" ip link set lo up
inns "$SW" ip link add br0 type bridge mcast_snooping 0 stp_state 0 forward_delay 0
inns "$SW" sysctl -qw net.ipv6.conf.br0.disable_ipv6=1
inns "$SW" ip link set br0 up
k=0
for ns in $R $S $H; do
	k=$((k+1))
	mkns "$ns"
	inns "$ns" ip link set lo up
	ip link add "ar${ID}p$k" netns "$SW" type veth peer name "ar${ID}n$k" netns "$ns"
	inns "$SW" sysctl -qw "net.ipv6.conf.ar${ID}p$k.disable_ipv6=1"
	inns "$SW" ip link set "ar${ID}p$k" master br0 up
	inns "$ns" ip link set "ar${ID}n$k" name eth0
	inns "$ns" ip link set eth0 up
done
inns "$H" sysctl -qw net.ipv6.conf.eth0.use_tempaddr=2
inns "$R" sysctl -qw net.ipv6.conf.all.forwarding=1
# The server answers unregistered hosts by unicast: it needs on-link routes to the prefixes.
inns "$S" ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad
inns "$S" ip -6 addr add fd00:db8:1::2/64 dev eth0 nodad
inns "$S" sysctl -qw net.ipv6.conf.eth0.accept_ra=0

radvd_conf() {
	cat <<CONF
interface eth0 {
	AdvSendAdvert on; AdvHomeAgentFlag on; AdvHomeAgentInfo off;
	MaxRtrAdvInterval 3; MinRtrAdvInterval 2; AdvDefaultLifetime 0;
	AdvManagedFlag off; AdvOtherConfigFlag on;
	prefix 2001:db8:1::/64 { AdvValidLifetime 40; AdvPreferredLifetime 20; };
	prefix fd00:db8:1::/64 { AdvValidLifetime 3600; AdvPreferredLifetime 1800; };
};
CONF
}
radvd_conf > "$WORK/radvd.conf"
inns "$R" radvd --nodaemon --config "$WORK/radvd.conf" --pidfile "$WORK/radvd.pid" --logmethod stderr >"$WORK/radvd.log" 2>&1 &
PIDS+=($!)

say "topology"
for ns in $R $S $H; do printf '%-22s %s\n' "$ns" "$(inns "$ns" ip -br -6 addr show dev eth0 | tr -s ' ')"; done

say "waiting for the host's SLAAC addresses (DAD takes a second)"
for _ in $(seq 50); do
	n=$(inns "$H" ip -6 -o addr show dev eth0 scope global -tentative | wc -l)
	[ "$n" -ge 3 ] && break
	sleep 0.2
done
inns "$H" ip -6 addr show dev eth0 scope global

if [ ! -x "$BIN/addrreg-refserver" ] || [ ! -x "$BIN/addrregd" ]; then
	say "addrregd or addrreg-refserver not built yet: the network above is all there is to see"
	echo "Ctrl-C to end"
	while pause 3600; do :; done
fi

say "starting addrreg-refserver on the server"
inns "$S" "$BIN/addrreg-refserver" -i eth0 --prefix eth0=2001:db8:1::/64 --prefix eth0=fd00:db8:1::/64 \
	--db "$WORK/bindings.db" --leasequery-allow ::/0 --control-socket "$WORK/server.sock" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do grep -q listening "$WORK/server.log" && break; sleep 0.1; done

say "starting addrregd on the host"
# State file and control socket in the demo's directory, not the host's /var/lib and /run.
inns "$H" "$BIN/addrregd" -i eth0 --state-file "$WORK/state.json" --control-socket "$WORK/agent.sock" >"$WORK/agent.log" 2>&1 &
PIDS+=($!)

bindings() {
	say "bindings on the server (addrreg-refserver query, RFC 5007 leasequery)"
	local a
	a=$(inns "$H" ip -6 -o addr show dev eth0 scope global | awk 'NR==1 {print $4}' | cut -d/ -f1)
	inns "$S" "$BIN/addrreg-refserver" query --address "$a" --server 2001:db8:1::2 2>&1 | sed 's/^/  /' || true
}
events() { grep -E 'msg=(register|refresh|move|expire|deregister|reject)' "$WORK/server.log" | tail -n "${1:-20}" | sed 's/^/  /' || true; }

pause 4
say "server log: the host's addresses registered (stable + temporary, global + ULA)"; events
bindings

say "the daemon's own view: addrregd status"
"$BIN/addrregd" status --control-socket "$WORK/agent.sock" 2>&1 | sed 's/^/  /' || true

say "adding a static address 2001:db8:1::100 on the host"
inns "$H" ip -6 addr add 2001:db8:1::100/64 dev eth0
pause 3; events 1

say "removing 2001:db8:1::100 from the host: addrregd deregisters it"
inns "$H" ip -6 addr del 2001:db8:1::100/64 dev eth0
pause 2; events 1
bindings

say "2001:db8:1::/64 has a 40 s valid lifetime that every RA extends: refreshes come every ~0.8 x 40 s (waiting 35 s)"
pause 35; events 4

say "streaming the server's registration log; Ctrl-C ends the demo"
tail -n 0 -f "$WORK/server.log" | grep --line-buffered -E 'msg=(register|refresh|move|expire|deregister|reject)' &
PIDS+=($!)
wait "${PIDS[1]}" || true

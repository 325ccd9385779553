#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# Derived from the Linux kernel's tools/testing/selftests/wireguard/netns.sh,
# Copyright (C) 2015-2019 Jason A. Donenfeld <Jason@zx2c4.com>. All Rights Reserved.
# netns-userspace.sh: the Linux kernel WireGuard selftest
# (tools/testing/selftests/wireguard/netns.sh of torvalds/linux)
# adapted to drive a userspace WireGuard daemon (wireguard-go or meshnode-wg).
#
#   WG_DAEMON=/path/to/daemon [LABEL=name] [OUT=dir] netns-userspace.sh
#
# Differences from the original (see README.md next to this file):
#  * `ip link add [dev] wgN type wireguard` in namespace K starts `WG_DAEMON -f NAME`
#    inside namespace K, with NAME unique per namespace (/var/run/wireguard is shared
#    by every namespace), and waits for its UAPI socket.  Every `wgN` argument given
#    to the ipK / nK wrappers is mapped to that NAME.  `ip link del wgN` stops that
#    daemon by its PID (SIGTERM, then SIGKILL after 5 s).
#  * First topology: the kernel test creates both wg0 in ns0 and moves them into ns1 /
#    ns2, so both UDP sockets stay in ns0 and talk over ns0's loopback.  A userspace
#    daemon cannot split its TUN and its sockets over two namespaces (moving the TUN
#    away makes meshnode-wg exit and leaves wireguard-go blind to link changes), so
#    the daemons run in ns1 / ns2 and ns0's `lo` is replaced by a veth pair
#    lv1 (ns1: 10.9.0.1/24, fd09::1/64) <-> lv2 (ns2: 10.9.0.2/24, fd09::2/64).
#    Address map:  127.0.0.1:2 (as seen by ns1) -> 10.9.0.2:2,  127.0.0.1:1 (ns2) -> 10.9.0.1:1,
#                  [::1]:2 -> [fd09::2]:2, [::1]:1 -> [fd09::1]:1,
#                  ns0 lo 127.0.0.1 -> 127.212.121.99  ==>  ns1 lv1 10.9.0.1 -> 10.9.0.99
#                  the iptables INPUT length-1360 drop in ns0 -> in ns1 and ns2.
#  * No `set -e`: each assertion is a numbered sub-test with PASS / FAIL / NA.
#    Setup commands that fail are reported as SETUP-ERR lines (not counted).
#  * ncat is not installed: bin/ncat next to this file is a tiny stand-in for the two
#    uses (-l -u -p PORT, and -u HOST PORT); readiness is checked with ss on the port.
#  * Every command run in a namespace has a timeout (TMO, 120 s; 40 s for iperf3).

set -E
WG_DAEMON=${WG_DAEMON:?set WG_DAEMON to the daemon binary}
LABEL=${LABEL:-$(basename "$WG_DAEMON")}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/meshnode-selftest/runs/$LABEL-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$OUT"
RES=$OUT/results.txt
: > "$RES"
exec 5>&1                      # the terminal / caller
exec 3>>"$OUT/trace.log"       # command trace (pretty)
exec 2>>"$OUT/trace.log"
export LANG=C
export WG_HIDE_KEYS=never
export PATH=$HERE/bin:$PATH
TMO=120
RID=$(( $$ % 1000 ))
netns0="wgu-$$-0"
netns1="wgu-$$-1"
netns2="wgu-$$-2"
SEC=setup
NCHK=0
declare -A DPID                 # "ns:wgN" -> daemon pid
declare -a BGPIDS=()            # other background processes we started

pretty() { echo -e "[+] ${1:+NS$1: }${2}" >&3; }
pp() { pretty "" "$*"; "$@"; }
maybe_exec() { if [[ $BASHPID -eq $$ ]]; then "$@"; else exec "$@"; fi; }

wgname() { echo "u${RID}n$1$2"; }
mapargs() {
	local ns=$1 a; shift
	MAPPED=()
	for a; do
		if [[ $a =~ ^wg[0-9]+$ ]]; then MAPPED+=("$(wgname "$ns" "$a")"); else MAPPED+=("$a"); fi
	done
}
nsof() { local v=netns$1; echo "${!v}"; }

start_wg() {
	local ns=$1 name=$2 real i
	real=$(wgname "$ns" "$name")
	pretty "$ns" "START $WG_DAEMON -f $real (for $name)"
	ip netns exec "$(nsof "$ns")" env LOG_LEVEL="${WG_LOG_LEVEL:-error}" WG_PROCESS_FOREGROUND=1 \
		"$WG_DAEMON" -f "$real" >>"$OUT/daemon-$real.log" 2>&1 </dev/null &
	DPID[$ns:$name]=$!
	for ((i = 0; i < 300; i++)); do
		[[ -S /var/run/wireguard/$real.sock ]] && ip -n "$(nsof "$ns")" link show dev "$real" >/dev/null 2>&1 && return 0
		kill -0 "${DPID[$ns:$name]}" 2>/dev/null || break
		/bin/sleep 0.1
	done
	echo "SETUP-ERR [$SEC] daemon for ns$ns $name ($real) did not come up" >>"$RES"
	return 1
}

stop_wg() {
	local ns=$1 name=$2 real pid i
	real=$(wgname "$ns" "$name")
	pid=${DPID[$ns:$name]}
	pretty "$ns" "STOP $real pid ${pid:-none}"
	if [[ -n $pid ]]; then
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid"
			for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; /bin/sleep 0.1; done
			kill -0 "$pid" 2>/dev/null && { echo "NOTE [$SEC] $real pid $pid ignored SIGTERM for 5 s, SIGKILL" >>"$RES"; kill -9 "$pid"; }
		else
			echo "DAEMON-DIED [$SEC] $real (ns$ns $name) pid $pid had exited before it was stopped" >>"$RES"
		fi
		wait "$pid" 2>/dev/null || true
		unset "DPID[$ns:$name]"
	fi
	ip -n "$(nsof "$ns")" link del dev "$real" 2>/dev/null || true
	rm -f "/var/run/wireguard/$real.sock"
	return 0
}

ipns() {
	local ns=$1; shift
	pretty "$ns" "ip $*"
	local -a a=("$@") r
	if [[ ${a[0]} == link && ${a[1]} == add ]]; then
		r=("${a[@]:2}"); [[ ${r[0]} == dev ]] && r=("${r[@]:1}")
		if [[ ${r[1]} == type && ${r[2]} == wireguard ]]; then start_wg "$ns" "${r[0]}"; return; fi
	fi
	if [[ ${a[0]} == link && ${a[1]} == del ]]; then
		r=("${a[@]:2}"); [[ ${r[0]} == dev ]] && r=("${r[@]:1}")
		if [[ ${r[0]} =~ ^wg[0-9]+$ ]]; then stop_wg "$ns" "${r[0]}"; return; fi
	fi
	mapargs "$ns" "$@"
	ip -n "$(nsof "$ns")" "${MAPPED[@]}"
}
ip0() { ipns 0 "$@"; }
ip1() { ipns 1 "$@"; }
ip2() { ipns 2 "$@"; }
nns() {
	local ns=$1; shift
	pretty "$ns" "$*"
	mapargs "$ns" "$@"
	maybe_exec ip netns exec "$(nsof "$ns")" timeout "$TMO" "${MAPPED[@]}"
}
n0() { nns 0 "$@"; }
n1() { nns 1 "$@"; }
n2() { nns 2 "$@"; }

waitport() { # ns tcp|udp port
	local i ns; ns=$(nsof "$1")
	for ((i = 0; i < 100; i++)); do
		[[ -n $(ss -N "$ns" -${2:0:1}lnH "sport = :$3") ]] && return 0
		/bin/sleep 0.1
	done
	return 1
}
waitiface() { pretty "${1//*-}" "wait for $2 to come up"; timeout 20 ip netns exec "$1" bash -c "while [[ \$(< \"/sys/class/net/$2/operstate\") != up ]]; do read -t .1 -N 0 || true; done;"; }
reap() { # pid seconds: wait for it to exit, kill it if not; status 0 only if it exited 0
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; /bin/sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 1; fi
	wait "$pid"
}

# ---------------------------------------------------------------- results
result() {
	local line
	line=$(printf '%-5s %03d [%s] %s' "$1" "$NCHK" "$SEC" "$2")
	echo "$line" >>"$RES"
	echo "$line" >&5
	echo "==== $line" >&3
}
check() { # description command...
	local desc=$1; shift
	((++NCHK))
	if "$@" >&3 2>&3; then result PASS "$desc"; else result FAIL "$desc"; fi
}
checkx() { # description 'bash code' (evaluated here, so it sees our variables)
	local desc=$1; shift
	((++NCHK))
	if eval "$1" >&3 2>&3; then result PASS "$desc"; else result FAIL "$desc${WHY:+ -- $WHY}"; fi
	WHY=
}
na() { ((++NCHK)); result NA "$1 -- not applicable: $2"; }
check_ep() { # description ns expected-endpoints
	local got
	((++NCHK))
	got=$(n"$2" wg show wg0 endpoints 2>&3)
	if [[ $got == "$3" ]]; then result PASS "$1"; else result FAIL "$1 -- got '${got//$'\t'/ }', expected '${3//$'\t'/ }'"; fi
}

# report a failing setup command once, where the script itself (or configure_peers) ran it
trap '[[ $BASHPID -eq $$ ]] && case ${FUNCNAME[0]} in ""|configure_peers) echo "SETUP-ERR [$SEC] line $LINENO: $BASH_COMMAND" >>"$RES";; esac' ERR

cleanup() {
	trap - ERR
	set +e
	local k pid
	for k in "${!DPID[@]}"; do stop_wg "${k%%:*}" "${k#*:}"; done
	for pid in "${BGPIDS[@]}"; do kill "$pid" 2>/dev/null; done
	printf "$orig_message_cost" >/proc/sys/net/core/message_cost
	local to_kill="$(ip netns pids $netns0 2>/dev/null) $(ip netns pids $netns1 2>/dev/null) $(ip netns pids $netns2 2>/dev/null)"
	[[ -n ${to_kill// /} ]] && { echo "NOTE cleanup: killing leftover pids in our namespaces: $to_kill" >>"$RES"; kill $to_kill 2>/dev/null; /bin/sleep 0.5; }
	ip netns del $netns1 2>/dev/null
	ip netns del $netns2 2>/dev/null
	ip netns del $netns0 2>/dev/null
	rm -f /var/run/wireguard/u${RID}n[012]wg[0-9].sock
	local p f n
	p=$(grep -c '^PASS' "$RES"); f=$(grep -c '^FAIL' "$RES"); n=$(grep -c '^NA' "$RES")
	{
		echo "SUMMARY $LABEL: applicable $((p + f)) passed $p failed $f not-applicable $n (daemon $WG_DAEMON)"
		grep -E '^(SETUP-ERR|DAEMON-DIED)' "$RES" | sed 's/^/  /'
	} | tee -a "$RES" >&5
	echo "results: $RES" >&5
}

orig_message_cost="$(< /proc/sys/net/core/message_cost)"
trap cleanup EXIT
printf 0 > /proc/sys/net/core/message_cost

ip netns del $netns0 2>/dev/null || true
ip netns del $netns1 2>/dev/null || true
ip netns del $netns2 2>/dev/null || true
pp ip netns add $netns0
pp ip netns add $netns1
pp ip netns add $netns2
ip0 link set up dev lo

# Replacement for ns0's loopback as the path between the ns1 and ns2 sockets.
ip link add lv1 netns $netns1 type veth peer name lv2 netns $netns2
ip1 addr add 10.9.0.1/24 dev lv1
ip1 addr add fd09::1/64 dev lv1 nodad
ip2 addr add 10.9.0.2/24 dev lv2
ip2 addr add fd09::2/64 dev lv2 nodad
ip1 link set lv1 up
ip2 link set lv2 up
waitiface $netns1 lv1
waitiface $netns2 lv2

# was: ip0 link add dev wg0 type wireguard; ip0 link set wg0 netns $netns1 (and the same for $netns2)
ip1 link add dev wg0 type wireguard
ip2 link add dev wg0 type wireguard
key1="$(pp wg genkey)"
key2="$(pp wg genkey)"
key3="$(pp wg genkey)"
key4="$(pp wg genkey)"
pub1="$(pp wg pubkey <<<"$key1")"
pub2="$(pp wg pubkey <<<"$key2")"
pub3="$(pp wg pubkey <<<"$key3")"
pub4="$(pp wg pubkey <<<"$key4")"
psk="$(pp wg genpsk)"
[[ -n $key1 && -n $key2 && -n $psk ]]

configure_peers() {
	ip1 addr add 192.168.241.1/24 dev wg0
	ip1 addr add fd00::1/112 dev wg0

	ip2 addr add 192.168.241.2/24 dev wg0
	ip2 addr add fd00::2/112 dev wg0

	n1 wg set wg0 \
		private-key <(echo "$key1") \
		listen-port 1 \
		peer "$pub2" \
			preshared-key <(echo "$psk") \
			allowed-ips 192.168.241.2/32,fd00::2/128
	n2 wg set wg0 \
		private-key <(echo "$key2") \
		listen-port 2 \
		peer "$pub1" \
			preshared-key <(echo "$psk") \
			allowed-ips 192.168.241.1/32,fd00::1/128

	ip1 link set up dev wg0
	ip2 link set up dev wg0
}
configure_peers

iperf_one() { # description server-ns client-ns address [client options]
	local desc=$1 s=$2 c=$3 addr=$4 sp rc; shift 4
	((++NCHK))
	n$s iperf3 -s -1 -B "$addr" >&3 2>&3 &
	sp=$!
	if ! waitport "$s" tcp 5201; then kill $sp 2>/dev/null; wait $sp 2>/dev/null || true; result FAIL "$desc -- iperf3 server did not listen"; return; fi
	TMO=40 n$c iperf3 -Z -t 3 "$@" -c "$addr" >&3 2>&3
	rc=$?
	reap $sp 10 || echo "NOTE [$SEC] $desc: iperf3 server did not exit cleanly" >>"$RES"
	if ((rc == 0)); then result PASS "$desc"; else result FAIL "$desc -- iperf3 client exit $rc"; fi
}
iperf_par() { # description count
	local desc=$1 max=$2 i p ok=1 bad=0
	local -a spids=() cpids=()
	((++NCHK))
	for ((i = 0; i < max; ++i)); do
		n2 iperf3 -p $((5200 + i)) -s -1 -B 192.168.241.2 >&3 2>&3 &
		spids+=($!)
		waitport 2 tcp $((5200 + i)) || ok=0
	done
	for ((i = 0; i < max; ++i)); do
		TMO=40 n1 iperf3 -Z -t 3 -p $((5200 + i)) -c 192.168.241.2 >&3 2>&3 &
		cpids+=($!)
	done
	for p in "${cpids[@]}"; do wait "$p" || { ok=0; ((++bad)); }; done
	for p in "${spids[@]}"; do reap "$p" 10 || ok=0; done
	if ((ok)); then result PASS "$desc"; else result FAIL "$desc -- $bad of $max clients failed"; fi
}

tests() {
	local t=$1
	# Ping over IPv4
	check "$t: ping v4 ns2->ns1" n2 ping -c 10 -f -W 1 192.168.241.1
	check "$t: ping v4 ns1->ns2" n1 ping -c 10 -f -W 1 192.168.241.2
	# Ping over IPv6
	check "$t: ping v6 ns2->ns1" n2 ping6 -c 10 -f -W 1 fd00::1
	check "$t: ping v6 ns1->ns2" n1 ping6 -c 10 -f -W 1 fd00::2
	iperf_one "$t: iperf3 TCP over IPv4" 2 1 192.168.241.2
	iperf_one "$t: iperf3 TCP over IPv6" 1 2 fd00::1
	iperf_one "$t: iperf3 UDP over IPv4" 1 2 192.168.241.1 -b 0 -u
	iperf_one "$t: iperf3 UDP over IPv6" 2 1 fd00::2 -b 0 -u
	# TCP over IPv4, in parallel
	local max
	for max in 4 5 50; do iperf_par "$t: iperf3 TCP over IPv4, $max in parallel" $max; done
}

[[ $(ip1 link show dev wg0) =~ mtu\ ([0-9]+) ]] && orig_mtu="${BASH_REMATCH[1]}"
big_mtu=$(( 34816 - 1500 + $orig_mtu ))

SEC=outer-v4
# Test using IPv4 as outer transport (was 127.0.0.1:2 / 127.0.0.1:1)
n1 wg set wg0 peer "$pub2" endpoint 10.9.0.2:2
n2 wg set wg0 peer "$pub1" endpoint 10.9.0.1:1
# Before calling tests, we first make sure that the stats counters and timestamper are working
check "stats: first ping v4 ns2->ns1" n2 ping -c 10 -f -W 1 192.168.241.1
{ read _; read _; read _; read rx_bytes _; read _; read tx_bytes _; } < <(ip2 -stats link show dev wg0)
echo "INFO ns2 TUN counters rx=$rx_bytes tx=$tx_bytes (kernel wg: 1372 / 1428|1460)" >>"$RES"
na "stats: ip -stats link ns2 wg0 rx 1372 / tx 1428|1460" "the counters of a TUN are kept by the kernel's tun driver (plaintext IP bytes, see the INFO line), not by the daemon; the kernel wg device counts the encrypted payload"
{ read _; read _; read _; read rx_bytes _; read _; read tx_bytes _; } < <(ip1 -stats link show dev wg0)
na "stats: ip -stats link ns1 wg0 tx 1372 / rx 1428|1460" "same as above"
read _ rx_bytes tx_bytes < <(n2 wg show wg0 transfer)
WHY="rx=$rx_bytes tx=$tx_bytes"; checkx "stats: wg show transfer ns2 rx 1372 / tx 1428|1460" '(( rx_bytes == 1372 && (tx_bytes == 1428 || tx_bytes == 1460) ))'
read _ rx_bytes tx_bytes < <(n1 wg show wg0 transfer)
WHY="rx=$rx_bytes tx=$tx_bytes"; checkx "stats: wg show transfer ns1 tx 1372 / rx 1428|1460" '(( tx_bytes == 1372 && (rx_bytes == 1428 || rx_bytes == 1460) ))'
read _ timestamp < <(n1 wg show wg0 latest-handshakes)
WHY="timestamp=$timestamp"; checkx "stats: latest-handshakes non-zero" '(( timestamp != 0 ))'

tests "outer v4"
ip1 link set wg0 mtu $big_mtu
ip2 link set wg0 mtu $big_mtu
SEC=outer-v4-bigmtu
tests "outer v4, mtu $big_mtu"

ip1 link set wg0 mtu $orig_mtu
ip2 link set wg0 mtu $orig_mtu

SEC=outer-v6
# Test using IPv6 as outer transport (was [::1]:2 / [::1]:1)
n1 wg set wg0 peer "$pub2" endpoint [fd09::2]:2
n2 wg set wg0 peer "$pub1" endpoint [fd09::1]:1
tests "outer v6"
ip1 link set wg0 mtu $big_mtu
ip2 link set wg0 mtu $big_mtu
SEC=outer-v6-bigmtu
tests "outer v6, mtu $big_mtu"

SEC=route-mtu
# Test that route MTUs work with the padding
ip1 link set wg0 mtu 1300
ip2 link set wg0 mtu 1300
n1 wg set wg0 peer "$pub2" endpoint 10.9.0.2:2
n2 wg set wg0 peer "$pub1" endpoint 10.9.0.1:1
n1 iptables -A INPUT -m length --length 1360 -j DROP   # was: n0 (on ns0's lo)
n2 iptables -A INPUT -m length --length 1360 -j DROP
n1 ip route add 192.168.241.2/32 dev wg0 mtu 1299
n2 ip route add 192.168.241.1/32 dev wg0 mtu 1299
check "route MTU 1299 on a 1300-MTU wg: ping -s 1269 (padding must not exceed the route MTU)" n2 ping -c 1 -W 1 -s 1269 192.168.241.1
n2 ip route delete 192.168.241.1/32 dev wg0 mtu 1299
n1 ip route delete 192.168.241.2/32 dev wg0 mtu 1299
n1 iptables -F INPUT
n2 iptables -F INPUT

ip1 link set wg0 mtu $orig_mtu
ip2 link set wg0 mtu $orig_mtu

SEC=roaming
# Test using IPv4 that roaming works (was: ns0 lo 127.0.0.1 -> 127.212.121.99)
ip1 -4 addr del 10.9.0.1/24 dev lv1
ip1 -4 addr add 10.9.0.99/24 dev lv1
n1 wg set wg0 listen-port 9999
n1 wg set wg0 peer "$pub2" endpoint 10.9.0.2:2
check "roaming v4: ping6 from the new address/port" n1 ping6 -W 1 -c 1 fd00::2
check_ep "roaming v4: ns2 learns endpoint 10.9.0.99:9999 (was 127.212.121.99:9999)" 2 "$pub1	10.9.0.99:9999"

# Test using IPv6 that roaming works
n1 wg set wg0 listen-port 9998
n1 wg set wg0 peer "$pub2" endpoint [fd09::2]:2
check "roaming v6: ping from the new port over v6" n1 ping -W 1 -c 1 192.168.241.2
check_ep "roaming v6: ns2 learns endpoint [fd09::1]:9998 (was [::1]:9998)" 2 "$pub1	[fd09::1]:9998"

SEC=crypto-rp
# Test that crypto-RP filter works
n1 wg set wg0 peer "$pub2" allowed-ips 192.168.241.0/24
exec 4< <(n1 ncat -l -u -p 1111)
ncat_pid=$!; BGPIDS+=($ncat_pid)
waitport 1 udp 1111
n2 ncat -u 192.168.241.1 1111 <<<"X"
checkx "crypto-RP: datagram from the allowed peer arrives" 'read -r -N 1 -t 1 out <&4 && [[ $out == "X" ]]'
kill $ncat_pid; wait $ncat_pid 2>/dev/null || true
more_specific_key="$(pp wg genkey | pp wg pubkey)"
n1 wg set wg0 peer "$more_specific_key" allowed-ips 192.168.241.2/32
n2 wg set wg0 listen-port 9997
exec 4< <(n1 ncat -l -u -p 1111)
ncat_pid=$!; BGPIDS+=($ncat_pid)
waitport 1 udp 1111
n2 ncat -u 192.168.241.1 1111 <<<"X"
checkx "crypto-RP: datagram whose source belongs to another peer is dropped" '! read -r -N 1 -t 1 out <&4'
kill $ncat_pid; wait $ncat_pid 2>/dev/null || true
n1 wg set wg0 peer "$more_specific_key" remove
check_ep "crypto-RP: ns1 still learned the new endpoint [fd09::2]:9997 (was [::1]:9997)" 1 "$pub2	[fd09::2]:9997"

SEC=key-change
# Test that we can change private keys keys and immediately handshake
n1 wg set wg0 private-key <(echo "$key1") peer "$pub2" preshared-key <(echo "$psk") allowed-ips 192.168.241.2/32 endpoint 10.9.0.2:2
n2 wg set wg0 private-key <(echo "$key2") listen-port 2 peer "$pub1" preshared-key <(echo "$psk") allowed-ips 192.168.241.1/32
check "key change: ping before" n1 ping -W 1 -c 1 192.168.241.2
n1 wg set wg0 private-key <(echo "$key3")
n2 wg set wg0 peer "$pub3" preshared-key <(echo "$psk") allowed-ips 192.168.241.1/32 peer "$pub1" remove
check "key change: ping right after changing ns1's private key" n1 ping -W 1 -c 1 192.168.241.2
n2 wg set wg0 peer "$pub3" remove

SEC=wg-in-wg
# Test that we can route wg through wg
ip1 addr flush dev wg0
ip2 addr flush dev wg0
ip1 addr add fd00::5:1/112 dev wg0
ip2 addr add fd00::5:2/112 dev wg0
n1 wg set wg0 private-key <(echo "$key1") peer "$pub2" preshared-key <(echo "$psk") allowed-ips fd00::5:2/128 endpoint 10.9.0.2:2
n2 wg set wg0 private-key <(echo "$key2") listen-port 2 peer "$pub1" preshared-key <(echo "$psk") allowed-ips fd00::5:1/128 endpoint 10.9.0.99:9998
ip1 link add wg1 type wireguard
ip2 link add wg1 type wireguard
ip1 addr add 192.168.241.1/24 dev wg1
ip1 addr add fd00::1/112 dev wg1
ip2 addr add 192.168.241.2/24 dev wg1
ip2 addr add fd00::2/112 dev wg1
ip1 link set mtu 1340 up dev wg1
ip2 link set mtu 1340 up dev wg1
n1 wg set wg1 listen-port 5 private-key <(echo "$key3") peer "$pub4" allowed-ips 192.168.241.2/32,fd00::2/128 endpoint [fd00::5:2]:5
n2 wg set wg1 listen-port 5 private-key <(echo "$key4") peer "$pub3" allowed-ips 192.168.241.1/32,fd00::1/128 endpoint [fd00::5:1]:5
tests "wg in wg"
SEC=routing-loop
# Try to set up a routing loop between the two namespaces
na "routing loop: ping through wg1 after moving it to ns0" "needs 'ip link set wg1 netns ns0' with the UDP socket staying in ns1 (a kernel wg device keeps the socket of the namespace it was created in; a TUN moved away from its daemon's namespace is not followed)"
na "routing loop: flood ping into the loop fails" "same"
na "routing loop: wg1 sends < 70000 bytes while looping (no runaway loop)" "same"
ip2 link del wg0
ip2 link del wg1
ip1 link del wg1   # was: ip0 link del wg1 (it stayed in ns1 here)
ip1 link del wg0
ip1 link del lv1

SEC=nat
# Test using NAT (same topology as the original from here on: the wg devices are
# created in the namespace that they stay in)
ip1 link add dev wg0 type wireguard
ip2 link add dev wg0 type wireguard
configure_peers

ip0 link add vethrc type veth peer name vethc
ip0 link add vethrs type veth peer name veths
ip0 link set vethc netns $netns1
ip0 link set veths netns $netns2
ip0 link set vethrc up
ip0 link set vethrs up
ip0 addr add 192.168.1.1/24 dev vethrc
ip0 addr add 10.0.0.1/24 dev vethrs
ip1 addr add 192.168.1.100/24 dev vethc
ip1 link set vethc up
ip1 route add default via 192.168.1.1
ip2 addr add 10.0.0.100/24 dev veths
ip2 link set veths up
waitiface $netns0 vethrc
waitiface $netns0 vethrs
waitiface $netns1 vethc
waitiface $netns2 veths

n0 bash -c 'printf 1 > /proc/sys/net/ipv4/ip_forward'
n0 iptables -t nat -A POSTROUTING -s 192.168.1.0/24 -d 10.0.0.0/24 -j SNAT --to 10.0.0.1
n0 bash -c 'printf 2 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout'
n0 bash -c 'printf 2 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream'

n1 wg set wg0 peer "$pub2" endpoint 10.0.0.100:2 persistent-keepalive 1
check "NAT: ping ns1->ns2 through SNAT" n1 ping -W 1 -c 1 192.168.241.2
check "NAT: ping ns2->ns1 back through the mapping" n2 ping -W 1 -c 1 192.168.241.1
check_ep "NAT: ns2 sees ns1 at 10.0.0.1:1" 2 "$pub1	10.0.0.1:1"
pp /bin/sleep 3
check "NAT: persistent-keepalive keeps the mapping (ping after 3 s)" n2 ping -W 1 -c 1 192.168.241.1
n1 wg set wg0 peer "$pub2" persistent-keepalive 0

SEC=bound-dev
# Test that sk_bound_dev_if works
check "ping -I wg0" n1 ping -I wg0 -c 1 -W 1 192.168.241.2
n1 iptables -t mangle -I OUTPUT -j MARK --set-xmark 1
check "ping with a mark set by iptables (reroute)" n1 ping -c 1 -W 1 192.168.241.2
check "ping -I wg0 with a mark set by iptables" n1 ping -I wg0 -c 1 -W 1 192.168.241.2
n1 iptables -t mangle -D OUTPUT -j MARK --set-xmark 1

SEC=onion
# Test that onion routing works, even when it loops
n1 wg set wg0 peer "$pub3" allowed-ips 192.168.242.2/32 endpoint 192.168.241.2:5
ip1 addr add 192.168.242.1/24 dev wg0
ip2 link add wg1 type wireguard
ip2 addr add 192.168.242.2/24 dev wg1
n2 wg set wg1 private-key <(echo "$key3") listen-port 5 peer "$pub1" allowed-ips 192.168.242.1/32
ip2 link set wg1 up
check "onion: ping through wg-in-wg (same daemon's wg0 carries wg1's peer)" n1 ping -W 1 -c 1 192.168.242.2
ip2 link del wg1
n1 wg set wg0 peer "$pub3" endpoint 192.168.242.2:5
checkx "onion loop: ping fails and the daemon survives (kernel: 'should not crash')" '! n1 ping -W 1 -c 1 192.168.242.2 && kill -0 ${DPID[1:wg0]} && n1 wg show wg0 >/dev/null'
n1 wg set wg0 peer "$pub3" remove
ip1 addr del 192.168.242.1/24 dev wg0

SEC=policy-routing
# Do a wg-quick(8)-style policy routing for the default route, making sure vethc has a v6 address to tease out bugs.
ip1 -6 addr add fc00::9/96 dev vethc
ip1 -6 route add default via fc00::1
ip2 -4 addr add 192.168.99.7/32 dev wg0
ip2 -6 addr add abab::1111/128 dev wg0
n1 wg set wg0 fwmark 51820 peer "$pub2" allowed-ips 192.168.99.7,abab::1111
ip1 -6 route add default dev wg0 table 51820
ip1 -6 rule add not fwmark 51820 table 51820
ip1 -6 rule add table main suppress_prefixlength 0
ip1 -4 route add default dev wg0 table 51820
ip1 -4 rule add not fwmark 51820 table 51820
ip1 -4 rule add table main suppress_prefixlength 0
n1 bash -c 'printf 0 > /proc/sys/net/ipv4/conf/vethc/rp_filter'
check "fwmark policy routing: ping -f x100 v4" n1 ping -W 1 -c 100 -f 192.168.99.7
check "fwmark policy routing: ping -f x100 v6" n1 ping -W 1 -c 100 -f abab::1111

SEC=icmp-error
# Have ns2 NAT into wg0 packets from ns0, but return an icmp error along the right route.
n2 iptables -t nat -A POSTROUTING -s 10.0.0.0/24 -d 192.168.241.0/24 -j SNAT --to 192.168.241.2
n0 iptables -t filter -A INPUT \! -s 10.0.0.0/24 -i vethrs -j DROP # Manual rpfilter just to be explicit.
n2 bash -c 'printf 1 > /proc/sys/net/ipv4/ip_forward'
ip0 -4 route add 192.168.241.1 via 10.0.0.100
n2 wg set wg0 peer "$pub1" remove
icmp_out=$(n0 ping -W 1 -c 1 192.168.241.1) || true
WHY="ping said: $(tr '\n' ' ' <<<"$icmp_out" | cut -c1-200)"
checkx "no peer for the destination: ICMP host unreachable comes back from 10.0.0.100" '[[ $icmp_out == *"From 10.0.0.100 icmp_seq=1 Destination Host Unreachable"* ]]'

n0 iptables -t nat -F
n0 iptables -t filter -F
n2 iptables -t nat -F
ip0 link del vethrc
ip0 link del vethrs
ip1 link del wg0
ip2 link del wg0

SEC=sticky
# Test that saddr routing is sticky but not too sticky
ip1 link add dev wg0 type wireguard
ip2 link add dev wg0 type wireguard
configure_peers
ip1 link add veth1 type veth peer name veth2
ip1 link set veth2 netns $netns2
n1 bash -c 'printf 0 > /proc/sys/net/ipv6/conf/all/accept_dad'
n2 bash -c 'printf 0 > /proc/sys/net/ipv6/conf/all/accept_dad'
n1 bash -c 'printf 0 > /proc/sys/net/ipv6/conf/veth1/accept_dad'
n2 bash -c 'printf 0 > /proc/sys/net/ipv6/conf/veth2/accept_dad'
n1 bash -c 'printf 1 > /proc/sys/net/ipv4/conf/veth1/promote_secondaries'

# First we check that we aren't overly sticky and can fall over to new IPs when old ones are removed
ip1 addr add 10.0.0.1/24 dev veth1
ip1 addr add fd00:aa::1/96 dev veth1
ip2 addr add 10.0.0.2/24 dev veth2
ip2 addr add fd00:aa::2/96 dev veth2
ip1 link set veth1 up
ip2 link set veth2 up
waitiface $netns1 veth1
waitiface $netns2 veth2
n1 wg set wg0 peer "$pub2" endpoint 10.0.0.2:2
check "not too sticky: ping v4 outer" n1 ping -W 1 -c 1 192.168.241.2
ip1 addr add 10.0.0.10/24 dev veth1
ip1 addr del 10.0.0.1/24 dev veth1
check "not too sticky: ping after the v4 source address is removed" n1 ping -W 1 -c 1 192.168.241.2
n1 wg set wg0 peer "$pub2" endpoint [fd00:aa::2]:2
check "not too sticky: ping v6 outer" n1 ping -W 1 -c 1 192.168.241.2
ip1 addr add fd00:aa::10/96 dev veth1
ip1 addr del fd00:aa::1/96 dev veth1
check "not too sticky: ping after the v6 source address is removed" n1 ping -W 1 -c 1 192.168.241.2

# Now we show that we can successfully do reply to sender routing
ip1 link set veth1 down
ip2 link set veth2 down
ip1 addr flush dev veth1
ip2 addr flush dev veth2
ip1 addr add 10.0.0.1/24 dev veth1
ip1 addr add 10.0.0.2/24 dev veth1
ip1 addr add fd00:aa::1/96 dev veth1
ip1 addr add fd00:aa::2/96 dev veth1
ip2 addr add 10.0.0.3/24 dev veth2
ip2 addr add fd00:aa::3/96 dev veth2
ip1 link set veth1 up
ip2 link set veth2 up
waitiface $netns1 veth1
waitiface $netns2 veth2
n2 wg set wg0 peer "$pub1" endpoint 10.0.0.1:1
check "reply to sender: ping via 10.0.0.1" n2 ping -W 1 -c 1 192.168.241.1
check_ep "reply to sender: endpoint stays 10.0.0.1:1" 2 "$pub1	10.0.0.1:1"
n2 wg set wg0 peer "$pub1" endpoint [fd00:aa::1]:1
check "reply to sender: ping via fd00:aa::1" n2 ping -W 1 -c 1 192.168.241.1
check_ep "reply to sender: endpoint stays [fd00:aa::1]:1" 2 "$pub1	[fd00:aa::1]:1"
n2 wg set wg0 peer "$pub1" endpoint 10.0.0.2:1
check "reply to sender: ping via 10.0.0.2" n2 ping -W 1 -c 1 192.168.241.1
check_ep "reply to sender: endpoint stays 10.0.0.2:1" 2 "$pub1	10.0.0.2:1"
n2 wg set wg0 peer "$pub1" endpoint [fd00:aa::2]:1
check "reply to sender: ping via fd00:aa::2" n2 ping -W 1 -c 1 192.168.241.1
check_ep "reply to sender: endpoint stays [fd00:aa::2]:1" 2 "$pub1	[fd00:aa::2]:1"

# What happens if the inbound destination address belongs to a different interface as the default route?
ip1 link add dummy0 type dummy 2>/dev/null || {
	# this kernel has no dummy driver: a veth pair with both ends in ns1 is the closest stand-in
	echo "NOTE [$SEC] no dummy driver in this kernel: dummy0 is a veth pair (dummy0 <-> dummy0p) with both ends in ns1" >>"$RES"
	ip1 link add dummy0 type veth peer name dummy0p
	ip1 link set dummy0p up
}
ip1 addr add 10.50.0.1/24 dev dummy0
ip1 link set dummy0 up
ip2 route add 10.50.0.0/24 dev veth2
n2 wg set wg0 peer "$pub1" endpoint 10.50.0.1:1
check "reply from an address of another interface (dummy0): ping" n2 ping -W 1 -c 1 192.168.241.1
check_ep "reply from an address of another interface: endpoint stays 10.50.0.1:1" 2 "$pub1	10.50.0.1:1"

ip1 link del dummy0
ip1 addr flush dev veth1
ip2 addr flush dev veth2
ip1 route flush dev veth1
ip2 route flush dev veth2

# Now we see what happens if another interface route takes precedence over an ongoing one
ip1 link add veth3 type veth peer name veth4
ip1 link set veth4 netns $netns2
ip1 addr add 10.0.0.1/24 dev veth1
ip2 addr add 10.0.0.2/24 dev veth2
ip1 addr add 10.0.0.3/24 dev veth3
ip1 link set veth1 up
ip2 link set veth2 up
ip1 link set veth3 up
ip2 link set veth4 up
waitiface $netns1 veth1
waitiface $netns2 veth2
waitiface $netns1 veth3
waitiface $netns2 veth4
ip1 route flush dev veth1
ip1 route flush dev veth3
ip1 route add 10.0.0.0/24 dev veth1 src 10.0.0.1 metric 2
n1 wg set wg0 peer "$pub2" endpoint 10.0.0.2:2
check "route precedence: ping via veth1" n1 ping -W 1 -c 1 192.168.241.2
check_ep "route precedence: ns2 sees source 10.0.0.1:1" 2 "$pub1	10.0.0.1:1"
ip1 route add 10.0.0.0/24 dev veth3 src 10.0.0.3 metric 1
n1 bash -c 'printf 0 > /proc/sys/net/ipv4/conf/veth1/rp_filter'
n2 bash -c 'printf 0 > /proc/sys/net/ipv4/conf/veth4/rp_filter'
n1 bash -c 'printf 0 > /proc/sys/net/ipv4/conf/all/rp_filter'
n2 bash -c 'printf 0 > /proc/sys/net/ipv4/conf/all/rp_filter'
check "route precedence: ping after a better route (veth3, src 10.0.0.3) appears" n1 ping -W 1 -c 1 192.168.241.2
check_ep "route precedence: ns2 sees the new source 10.0.0.3:1" 2 "$pub1	10.0.0.3:1"

ip1 link del veth1
ip1 link del veth3
ip1 link del wg0
ip2 link del wg0

SEC=uapi
# We test that Netlink/IPC is working properly by doing things that usually cause split responses
ip0 link add dev wg0 type wireguard
config=( "[Interface]" "PrivateKey=$(wg genkey)" "[Peer]" "PublicKey=$(wg genkey)" )
for a in {1..255}; do
	for b in {0..255}; do
		config+=( "AllowedIPs=$a.$b.0.0/16,$a::$b/128" )
	done
done
check "setconf: one peer with 130560 allowed-ips" n0 wg setconf wg0 <(printf '%s\n' "${config[@]}")
i=0
for ip in $(n0 wg show wg0 allowed-ips); do
	((++i))
done
WHY="counted $i"; checkx "show: 130560 allowed-ips come back" '((i == 255*256*2+1))'
ip0 link del wg0
ip0 link add dev wg0 type wireguard
config=( "[Interface]" "PrivateKey=$(wg genkey)" )
for a in {1..40}; do
	config+=( "[Peer]" "PublicKey=$(wg genkey)" )
	for b in {1..52}; do
		config+=( "AllowedIPs=$a.$b.0.0/16" )
	done
done
n0 wg setconf wg0 <(printf '%s\n' "${config[@]}")
i=0; jbad=0
while read -r line; do
	j=0
	for ip in $line; do
		((++j))
	done
	((j == 53)) || ((++jbad))
	((++i))
done < <(n0 wg show wg0 allowed-ips)
WHY="$i peers, $jbad with a wrong count"; checkx "show: 40 peers x 52 allowed-ips each" '((i == 40 && jbad == 0))'
ip0 link del wg0
ip0 link add wg0 type wireguard
config=( )
for i in {1..29}; do
	config+=( "[Peer]" "PublicKey=$(wg genkey)" )
done
config+=( "[Peer]" "PublicKey=$(wg genkey)" "AllowedIPs=255.2.3.4/32,abcd::255/128" )
n0 wg setconf wg0 <(printf '%s\n' "${config[@]}")
check "showconf: 30 peers, the last with allowed-ips" n0 wg showconf wg0
ip0 link del wg0

allowedips=( )
for i in {1..197}; do
        allowedips+=( abcd::$i )
done
saved_ifs="$IFS"
IFS=,
allowedips="${allowedips[*]}"
IFS="$saved_ifs"
ip0 link add wg0 type wireguard
n0 wg set wg0 peer "$pub1"
n0 wg set wg0 peer "$pub2" allowed-ips "$allowedips"
ok197=0
{
	read -r pub allowedips
	[[ $pub == "$pub1" && $allowedips == "(none)" ]] && {
	read -r pub allowedips
	[[ $pub == "$pub2" ]] && {
	i=0
	for _ in $allowedips; do
		((++i))
	done
	((i == 197)) && ok197=1; }; }
} < <(n0 wg show wg0 allowed-ips)
checkx "show: peer with none, then peer with 197 v6 allowed-ips" '((ok197))'
ip0 link del wg0

SEC=keys
checkx "wg show doesnotexist fails" '! n0 wg show doesnotexist'

ip0 link add wg0 type wireguard
n0 wg set wg0 private-key <(echo "$key1") peer "$pub2" preshared-key <(echo "$psk")
checkx "show private-key" '[[ $(n0 wg show wg0 private-key) == "$key1" ]]'
checkx "show preshared-keys" '[[ $(n0 wg show wg0 preshared-keys) == "$pub2	$psk" ]]'
n0 wg set wg0 private-key /dev/null peer "$pub2" preshared-key /dev/null
checkx "private-key /dev/null clears it" '[[ $(n0 wg show wg0 private-key) == "(none)" ]]'
checkx "preshared-key /dev/null clears it" '[[ $(n0 wg show wg0 preshared-keys) == "$pub2	(none)" ]]'
n0 wg set wg0 peer "$pub2"
n0 wg set wg0 private-key <(echo "$key2")
checkx "public-key follows the private key" '[[ $(n0 wg show wg0 public-key) == "$pub2" ]]'
checkx "a peer with our own public key is removed when the private key is set" '[[ -z $(n0 wg show wg0 peers) ]]'
n0 wg set wg0 peer "$pub2"
checkx "a peer with our own public key cannot be added" '[[ -z $(n0 wg show wg0 peers) ]]'
n0 wg set wg0 private-key <(echo "$key1")
n0 wg set wg0 peer "$pub2"
checkx "the peer can be added once the private key differs" '[[ $(n0 wg show wg0 peers) == "$pub2" ]]'
n0 wg set wg0 private-key <(echo "/${key1:1}")
checkx "private key is shown clamped" '[[ $(n0 wg show wg0 private-key) == "+${key1:1}" ]]'
check "allowed-ips: overlapping v4 prefixes incl. 0.0.0.0/0" n0 wg set wg0 peer "$pub2" allowed-ips 0.0.0.0/0,10.0.0.0/8,100.0.0.0/10,172.16.0.0/12,192.168.0.0/16
check "allowed-ips: replace with 0.0.0.0/0" n0 wg set wg0 peer "$pub2" allowed-ips 0.0.0.0/0
check "allowed-ips: overlapping v6 prefixes incl. ::/0" n0 wg set wg0 peer "$pub2" allowed-ips ::/0,1700::/111,5000::/4,e000::/37,9000::/75
check "allowed-ips: replace with ::/0" n0 wg set wg0 peer "$pub2" allowed-ips ::/0
n0 wg set wg0 peer "$pub2" remove
lo_ok=1
for low_order_point in AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= 4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA= X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc= 7P///////////////////////////////////////38= 7f///////////////////////////////////////38= 7v///////////////////////////////////////38=; do
	n0 wg set wg0 peer "$low_order_point" persistent-keepalive 1 endpoint 127.0.0.1:1111 || lo_ok=0
done
checkx "low-order public keys are accepted as peers (wg set succeeds)" '((lo_ok))'
checkx "low-order peers are listed" '[[ -n $(n0 wg show wg0 peers) ]]'
exec 4< <(n0 ncat -l -u -p 1111)
ncat_pid=$!; BGPIDS+=($ncat_pid)
waitport 0 udp 1111
ip0 link set wg0 up
checkx "low-order peers: nothing is sent to them (no handshake / keepalive within 2 s)" '! read -r -n 1 -t 2 <&4'
kill $ncat_pid; wait $ncat_pid 2>/dev/null || true
ip0 link del wg0

SEC=circular-refs
na "no circular reference loops (wg1/wg2 moved across namespaces, namespaces deleted, kmsg created/destroyed balance)" "needs 'ip link set wgN netns' moves and the module's debug 'created/destroyed' lines in /dev/kmsg"

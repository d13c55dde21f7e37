#!/usr/bin/env bash
# bench.sh reproduces every figure in BENCHMARKS.md on this machine: it
# builds authbox and the bare reference server, runs them as separate
# processes on loopback, drives both with "authbox bench" alternately
# (authbox, bare, authbox, bare, ...) and prints medians of per-round
# ratios. Server and load generator share the machine.
#
#   ./bench.sh                 # everything (about 20 minutes on 2 cores)
#   ./bench.sh logins million  # only some sections
#
# Sections: logins tls postgres million tenmillion register burst syscalls
# cli gobench metrics etcd.
#   logins      plain TCP, authbox vs the bare server, 32 and 64 clients,
#               new connection per login and --reuse
#   tls         TLS 1.3, authbox vs the bare TLS server, 32 clients, new
#               connection per login, full handshakes and --resume
#   postgres    PostgreSQL 15's SCRAM-SHA-256 logins (pgbench -C) vs
#               authbox's; needs Debian's postgresql (apt-get install -y
#               postgresql), skipped without it; as root it runs the
#               cluster as the user postgres (made if missing)
#   million     1,000,000 accounts vs 1,000: populate time, size, logins
#   tenmillion  the same with 10,000,000 accounts (1.5 GB db, removed after)
# The etcd section needs the etcd binary (apt-get install -y etcd-server).
# Knobs: ROUNDS (5), DUR (5s per run), OUT (results dir, default a temp dir),
# TLS_ROUNDS (twice ROUNDS: a full handshake costs ten logins' CPU and
# swings by a tenth from run to run here, so its ratio needs more rounds).
# Needs Linux (/proc) and python3 for the summaries; strace for the
# "syscalls" section (apt-get install -y strace). CI never runs this.
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-5}
TLS_ROUNDS=${TLS_ROUNDS:-$((ROUNDS * 2))}
DUR=${DUR:-5s}
OUT=${OUT:-$(mktemp -d /tmp/authbox-bench.XXXXXX)}
mkdir -p "$OUT"
# Pins and the bench accounts' secret (kept beside known_servers) live in
# $OUT: a fresh server identity on a port that an earlier run pinned in
# the user's own known_servers would otherwise be refused as a changed key.
export AUTHBOX_KNOWN_SERVERS="$OUT/known_servers"
sections=${*:-logins tls postgres million tenmillion register burst syscalls cli gobench metrics etcd}
echo "results in $OUT"

pids=()
# pg_stop is set while a PostgreSQL cluster of the postgres section runs
# (the command, as an array, that stops it): pg_ctl puts the postmaster in
# the background, out of pids.
pg_stop=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ ${#pg_stop[@]} -eq 0 ] || "${pg_stop[@]}" >/dev/null 2>&1 || true
	wait 2>/dev/null || true
}
trap cleanup EXIT

go build -o "$OUT/authbox" .
go test -c -o "$OUT/bare.test" .
AB="$OUT/authbox"
# Plain TCP, as the bare reference server speaks: these figures compare the
# server's own work per login, without TLS.
printf 'iterations = 4096\ntls = false\n' >"$OUT/auth.toml"

# start_authbox DB [CONFIG]: runs "authbox serve" on a free port with
# CONFIG ($OUT/auth.toml when left out); sets SRV_ADDR, SRV_PID and, over
# TLS, SRV_FP (the fingerprint its start line names). DB "-" serves the
# store the config names instead of a file.
start_authbox() {
	local log="$OUT/serve.$RANDOM.log" db=(--db "$1") conf=${2:-$OUT/auth.toml}
	[ "$1" = - ] && db=()
	"$AB" serve --config "$conf" --listen 127.0.0.1:0 "${db[@]}" 2>"$log" &
	SRV_PID=$!
	pids+=("$SRV_PID")
	for _ in $(seq 100); do
		SRV_ADDR=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$log")
		SRV_FP=$(sed -n 's/.*msg=listening .* fingerprint=\([^ ]*\).*/\1/p' "$log")
		[ -n "$SRV_ADDR" ] && return 0
		sleep 0.1
	done
	echo "serve did not start: $(cat "$log")" >&2
	exit 1
}

# start_bare [tls]: runs the bare reference server (TestBareServer in
# bench_test.go, which serves until SIGTERM); sets BARE_ADDR, BARE_PID.
# With "tls" it speaks TLS 1.3 as authbox does and BARE_FP is the
# fingerprint it prints first.
start_bare() {
	local log="$OUT/bare.$RANDOM.log" tls=0
	[ "${1:-}" = tls ] && tls=1
	# The collector setting "authbox serve" uses on a bbolt file
	# (serveGCPercent in serve.go), unless GOGC is set for both: the ratios
	# then compare the servers' work, not their collectors' settings. (At
	# Go's default the bare server's collector costs it about 3 us a new
	# connection, for the line reader it makes for each.)
	GOGC=${GOGC:-400} AUTHBOX_BARE_TLS=$tls AUTHBOX_BARE_ADDR=127.0.0.1:0 "$OUT/bare.test" -test.run '^TestBareServer$' -test.timeout 0 >"$log" 2>&1 &
	BARE_PID=$!
	pids+=("$BARE_PID")
	for _ in $(seq 100); do
		BARE_ADDR=$(sed -n 's/^bare server listening on //p' "$log")
		BARE_FP=$(sed -n 's/^bare server fingerprint //p' "$log")
		[ -n "$BARE_ADDR" ] && return 0
		sleep 0.1
	done
	echo "bare server did not start: $(cat "$log")" >&2
	exit 1
}

# stop PID: stops a server started above; both exit 0 on SIGTERM, so any
# other status is reported (the run's figures are still printed).
stop() {
	kill "$1"
	local rc=0
	wait "$1" || rc=$?
	[ "$rc" = 0 ] || echo "warning: process $1 exited with status $rc when stopped" >&2
}

# bench_json TAG ARGS...: one bench run, its JSON report appended to
# results.jsonl under TAG.
bench_json() {
	local tag=$1
	shift
	"$AB" bench --json --duration "$DUR" "$@" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["tag"]=sys.argv[1]; print(json.dumps(r))' "$tag" >>"$OUT/results.jsonl"
}

# run TAG ARGS...: bench_json over plain TCP.
run() {
	local tag=$1
	shift
	bench_json "$tag" --plain "$@"
}

# summary A B: medians over rounds of B/A and A/B ratios for tags A and B.
summary() {
	python3 - "$OUT/results.jsonl" "$1" "$2" <<'EOF'
import json, statistics, sys
path, a, b = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
A = [r for r in rows if r["tag"] == a]
B = [r for r in rows if r["tag"] == b]
n = min(len(A), len(B))
def med(xs): return statistics.median(xs) if xs else float("nan")
rate = [A[i]["ops_per_sec"] / B[i]["ops_per_sec"] for i in range(n) if B[i]["ops_per_sec"]]
cpu = [A[i]["server_cpu_us_per_op"] / B[i]["server_cpu_us_per_op"] for i in range(n) if B[i].get("server_cpu_us_per_op")]
errs = sum(r["errors"] for r in A + B)
print(f"{a} vs {b}: {n} rounds")
print(f"  ops/s       {a}: median {med([r['ops_per_sec'] for r in A]):.0f}   {b}: median {med([r['ops_per_sec'] for r in B]):.0f}   ratio median {med(rate):.3f} (per round: {' '.join(f'{x:.2f}' for x in rate)})")
if cpu:
    print(f"  server cpu  {a}: median {med([r['server_cpu_us_per_op'] for r in A]):.1f}us/op   {b}: median {med([r['server_cpu_us_per_op'] for r in B]):.1f}us/op   ratio median {med(cpu):.3f} (per round: {' '.join(f'{x:.2f}' for x in cpu)})")
def p99(rs):
    xs = [r["latency_ms"]["p99"] for r in rs if "p99" in r.get("latency_ms", {})]
    return f"{med(xs):.2f}" if xs else "n/a"
print(f"  p99 ms      {a}: median {p99(A)}   {b}: median {p99(B)}   errors in all runs: {errs}")
EOF
}

has() { [[ " $sections " == *" $1 "* ]]; }

if has logins; then
	echo "== logins: authbox vs bare, alternating, $ROUNDS rounds of $DUR"
	"$AB" bench populate --db "$OUT/k.db" --users 1000 --iterations 4096
	start_authbox "$OUT/k.db"
	start_bare
	for r in $(seq "$ROUNDS"); do
		for conc in 32 64; do
			for reuse in "" --reuse; do
				run "authbox-c$conc$reuse" --server "$SRV_ADDR" --pid "$SRV_PID" --no-setup --users 1000 --conc "$conc" $reuse
				run "bare-c$conc$reuse" --server "$BARE_ADDR" --pid "$BARE_PID" --bare --no-setup --users 1000 --conc "$conc" $reuse
			done
		done
		echo "round $r done"
	done
	for t in c32 c64 c32--reuse c64--reuse; do summary "authbox-$t" "bare-$t"; done
	stop "$SRV_PID"
	stop "$BARE_PID"
fi

if has tls; then
	echo "== tls: authbox over TLS 1.3 vs the bare TLS server, alternating, $TLS_ROUNDS rounds of $DUR"
	# TLS at its defaults (a self-made Ed25519 identity kept in the db,
	# session tickets on, the default mechanisms, so SCRAM-SHA-256-PLUS
	# bound to the connection); its own db, as the identity is stored in it.
	printf 'iterations = 4096\n' >"$OUT/auth-tls.toml"
	"$AB" bench populate --db "$OUT/tls-k.db" --users 1000 --iterations 4096
	start_authbox "$OUT/tls-k.db" "$OUT/auth-tls.toml"
	[ -n "$SRV_FP" ] || { echo "authbox serve named no fingerprint: is TLS off?" >&2; exit 1; }
	start_bare tls
	# A new connection per login: a full handshake each time, or with
	# --resume a resumed one from the client's session cache (no
	# certificate, no signature; the key exchange still runs, as Go's TLS
	# 1.3 resumes with a fresh (EC)DHE share).
	for r in $(seq "$TLS_ROUNDS"); do
		for resume in "" --resume; do
			bench_json "authbox-tls-c32$resume" --server "$SRV_ADDR" --fingerprint "$SRV_FP" --pid "$SRV_PID" --no-setup --users 1000 --conc 32 $resume
			bench_json "bare-tls-c32$resume" --server "$BARE_ADDR" --fingerprint "$BARE_FP" --pid "$BARE_PID" --bare --no-setup --users 1000 --conc 32 $resume
		done
		echo "round $r done"
	done
	for t in tls-c32 tls-c32--resume; do summary "authbox-$t" "bare-$t"; done
	stop "$SRV_PID"
	stop "$BARE_PID"
fi

if has metrics; then
	echo "== metrics: a server with metrics_listen vs one without, alternating, $ROUNDS rounds of $DUR"
	"$AB" bench populate --db "$OUT/met-on.db" --users 1000 --iterations 4096
	"$AB" bench populate --db "$OUT/met-off.db" --users 1000 --iterations 4096
	cp "$OUT/auth.toml" "$OUT/auth-off.toml"
	printf 'metrics_listen = "127.0.0.1:0"\n' >>"$OUT/auth.toml"
	start_authbox "$OUT/met-on.db"
	ON_ADDR=$SRV_ADDR ON_PID=$SRV_PID
	cp "$OUT/auth-off.toml" "$OUT/auth.toml"
	start_authbox "$OUT/met-off.db"
	OFF_ADDR=$SRV_ADDR OFF_PID=$SRV_PID
	for r in $(seq "$ROUNDS"); do
		for reuse in "" --reuse; do
			run "metrics-on$reuse" --server "$ON_ADDR" --pid "$ON_PID" --no-setup --users 1000 --conc 32 $reuse
			run "metrics-off$reuse" --server "$OFF_ADDR" --pid "$OFF_PID" --no-setup --users 1000 --conc 32 $reuse
		done
	done
	summary metrics-on metrics-off
	summary metrics-on--reuse metrics-off--reuse
	stop "$ON_PID"
	stop "$OFF_PID"
fi

# cpu_ticks PID...: the summed utime+stime of the processes, in clock ticks.
cpu_ticks() {
	local t=0 p
	for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}

if has etcd; then
	echo "== etcd store vs bbolt store: 3 etcd members and the servers on this machine, alternating, $ROUNDS rounds of $DUR"
	cluster=e1=http://127.0.0.1:12380,e2=http://127.0.0.1:13380,e3=http://127.0.0.1:14380
	epids=()
	for m in "e1 12379 12380" "e2 13379 13380" "e3 14379 14380"; do
		set -- $m
		etcd --name "$1" --data-dir "$OUT/$1.etcd" \
			--listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
			--listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
			--initial-cluster "$cluster" --initial-cluster-token authbox-bench 2>"$OUT/$1.log" &
		epids+=($!)
		pids+=($!)
	done
	# Ports below 32768, outside Linux's range for outgoing connections.
	for _ in $(seq 100); do
		ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:12379 endpoint health >/dev/null 2>&1 && break
		sleep 0.2
	done
	cp "$OUT/auth.toml" "$OUT/auth-bbolt.toml"
	printf 'store = "etcd"\n[etcd]\nendpoints = ["127.0.0.1:12379", "127.0.0.1:13379", "127.0.0.1:14379"]\nprefix = "/bench/"\n' >>"$OUT/auth.toml"
	cp "$OUT/auth.toml" "$OUT/auth-etcd.toml"
	"$AB" bench populate --db "$OUT/etcd-k.db" --users 1000 --iterations 4096
	"$AB" restore --config "$OUT/auth-etcd.toml" "$OUT/etcd-k.db"
	start_authbox -
	E_ADDR=$SRV_ADDR E_PID=$SRV_PID
	cp "$OUT/auth-bbolt.toml" "$OUT/auth.toml"
	start_authbox "$OUT/etcd-k.db"
	B_ADDR=$SRV_ADDR B_PID=$SRV_PID
	: >"$OUT/etcd-cpu.txt"
	for r in $(seq "$ROUNDS"); do
		t0=$(cpu_ticks "${epids[@]}") s0=$(date +%s.%N)
		run "etcd-login-c32" --server "$E_ADDR" --pid "$E_PID" --no-setup --users 1000 --conc 32
		echo "login $(( $(cpu_ticks "${epids[@]}") - t0 )) $(echo "$(date +%s.%N) - $s0" | bc)" >>"$OUT/etcd-cpu.txt"
		run "bbolt-login-c32" --server "$B_ADDR" --pid "$B_PID" --no-setup --users 1000 --conc 32
		t0=$(cpu_ticks "${epids[@]}") s0=$(date +%s.%N)
		run "etcd-register-c64" --server "$E_ADDR" --pid "$E_PID" --mode register --conc 64
		echo "register $(( $(cpu_ticks "${epids[@]}") - t0 )) $(echo "$(date +%s.%N) - $s0" | bc)" >>"$OUT/etcd-cpu.txt"
		run "bbolt-register-c64" --server "$B_ADDR" --pid "$B_PID" --mode register --conc 64
	done
	summary etcd-login-c32 bbolt-login-c32
	summary etcd-register-c64 bbolt-register-c64
	python3 - "$OUT/etcd-cpu.txt" "$(getconf CLK_TCK)" "$(nproc)" <<'PY'
import sys, statistics
path, hz, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for line in open(path):
    what, ticks, secs = line.split()
    rows.setdefault(what, []).append(int(ticks) / hz / float(secs) / cores)
for what, shares in rows.items():
    print(f"  etcd's share of the machine's CPU during the {what} runs (3 members, {cores} cores): median {100*statistics.median(shares):.0f}% (per round: {' '.join(f'{100*x:.0f}%' for x in shares)})")
PY
	stop "$E_PID"
	stop "$B_PID"
	for p in "${epids[@]}"; do kill "$p"; done
fi

# postgres_section: PostgreSQL 15's SCRAM-SHA-256 login rate beside
# authbox's (issue 9 item 5), in one alternating run. A function so that a
# missing postgresql can skip it with return.
postgres_section() {
	local pgbin=/usr/lib/postgresql/15/bin pgd="$OUT/pg" as_pg=() pg_user port secs r
	echo "== postgres: PostgreSQL 15 SCRAM-SHA-256 logins (pgbench -C) vs authbox, alternating, $ROUNDS rounds of $DUR"
	# The full path: a pg_ctl elsewhere on PATH may be another version's.
	if [ ! -x "$pgbin/postgres" ]; then
		echo "$pgbin/postgres is missing: apt-get install -y postgresql, then run this section again; skipped"
		return 0
	fi
	# postgres refuses to run as root: as root, the cluster runs as the
	# system user postgres (Debian's package makes it), made if missing.
	if [ "$(id -u)" = 0 ]; then
		pg_user=postgres
		id -u "$pg_user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$pg_user"
		as_pg=(runuser -u "$pg_user" --)
	fi
	# A fresh cluster each time, also when OUT is given again.
	rm -rf "$pgd"
	mkdir -p "$pgd"
	if [ ${#as_pg[@]} -gt 0 ]; then
		chown "$pg_user" "$pgd"
		# mktemp made $OUT 0700: that user needs to pass through it (only
		# to pass: its files are not listed, and the dbs are 0600).
		"${as_pg[@]}" test -w "$pgd" || chmod go+x "$OUT"
		"${as_pg[@]}" test -w "$pgd" || { echo "user $pg_user cannot write to $pgd (a directory above it is closed to it); skipped"; return 0; }
	fi
	# Random passwords, never printed: the superuser's for initdb, the bench
	# role's for pgbench, both read by libpq from a 0600 PGPASSFILE rather
	# than from the environment or the command line.
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	local su_pw bench_pw
	su_pw=$(head -c 18 /dev/urandom | base64)
	bench_pw=$(head -c 18 /dev/urandom | base64)
	(umask 077 && printf '%s\n' "$su_pw" >"$pgd/su.pw" &&
		printf '127.0.0.1:%s:*:postgres:%s\n127.0.0.1:%s:*:bench:%s\n' "$port" "$su_pw" "$port" "$bench_pw" >"$OUT/pgpass")
	[ ${#as_pg[@]} -eq 0 ] || chown "$pg_user" "$pgd/su.pw"
	export PGPASSFILE="$OUT/pgpass"
	"${as_pg[@]}" "$pgbin/initdb" -D "$pgd/data" -U postgres --pwfile="$pgd/su.pw" -A scram-sha-256 \
		-E UTF8 --locale=C --no-sync --no-instructions >"$pgd/initdb.log" 2>&1 ||
		{ echo "initdb failed: $(cat "$pgd/initdb.log")" >&2; exit 1; }
	rm "$pgd/su.pw"
	# TCP on loopback only, no Unix socket; SCRAM for every connection.
	# Autovacuum off: there are no tables, and its workers would come and
	# go during the CPU reading below.
	cat >>"$pgd/data/postgresql.conf" <<-EOF
		listen_addresses = '127.0.0.1'
		port = $port
		unix_socket_directories = ''
		password_encryption = 'scram-sha-256'
		autovacuum = off
	EOF
	echo 'host all all 127.0.0.1/32 scram-sha-256' >"$pgd/data/pg_hba.conf"
	"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgd/data" -l "$pgd/postgres.log" -w start >/dev/null ||
		{ echo "postgres did not start: $(cat "$pgd/postgres.log")" >&2; exit 1; }
	pg_stop=("${as_pg[@]}" "$pgbin/pg_ctl" -D "$pgd/data" -m fast -w stop)
	local pm
	pm=$(head -1 "$pgd/data/postmaster.pid")
	local psql=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
	# The password goes on standard input, not the command line; the
	# server hashes it under password_encryption.
	"${psql[@]}" <<<"CREATE ROLE bench LOGIN PASSWORD '$bench_pw';"
	# PostgreSQL 15's SCRAM iteration count is fixed at 4096 (the
	# scram_iterations setting came in 16), the bench config's iterations:
	# the stored verifier's head says so (the mechanism and the count, no
	# secret).
	echo "postgres $("${psql[@]}" -Atc 'SHOW server_version'): role bench stored as $("${psql[@]}" -Atc "SELECT split_part(rolpassword, ':', 1) FROM pg_authid WHERE rolname = 'bench'"), authbox's accounts with 4096 iterations"
	echo 'SELECT 1;' >"$pgd/login.sql"
	# pgbench -T takes whole seconds.
	secs=$(python3 -c '
import math, re, sys
units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
parts = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", sys.argv[1])
t = sum(float(v) * units[u] for v, u in parts) if parts else float(sys.argv[1])
print(max(1, math.ceil(t)))' "$DUR")
	[ -f "$OUT/k.db" ] || "$AB" bench populate --db "$OUT/k.db" --users 1000 --iterations 4096
	start_authbox "$OUT/k.db"
	# The cluster's CPU, read from /proc: the postmaster's own utime+stime,
	# plus its cutime+cstime, which the kernel adds to when the postmaster
	# reaps a child (each connection's backend is a child that exits at
	# the end of the connection), plus the utime+stime of the children
	# alive (checkpointer, background writer, walwriter, launcher). Read
	# only when no backend is alive, so that no process is counted both
	# alive and reaped, or neither: the script waits for the postmaster's
	# children to be those of before the first round (a backend that has
	# exited but is not yet reaped is still a child). A cgroup would do the
	# same but needs a writable cgroup tree, which containers often lack.
	pg_cpu_ticks() {
		python3 - "$pm" "$pgd/aux.pids" <<-'EOF'
			import os, sys, time
			pm, auxfile = sys.argv[1:]
			def stat(pid):
			    with open(f"/proc/{pid}/stat") as f:
			        s = f.read()
			    return s[s.rindex(")") + 2:].split()  # from field 3, state, on
			def children():
			    out = {}
			    for d in os.listdir("/proc"):
			        if d.isdigit():
			            try:
			                f = stat(d)
			            except OSError:
			                continue
			            if f[1] == pm:
			                out[d] = f
			    return out
			if not os.path.exists(auxfile):
			    with open(auxfile, "w") as f:
			        f.write(" ".join(sorted(children())))
			aux = set(open(auxfile).read().split())
			deadline = time.time() + 10
			while True:
			    kids = children()
			    if set(kids) <= aux:
			        break
			    if time.time() > deadline:
			        print(f"warning: backends still alive after 10 s: {sorted(set(kids) - aux)}", file=sys.stderr)
			        break
			    time.sleep(0.05)
			p = stat(pm)
			# utime stime cutime cstime are fields 14-17
			print(sum(int(x) for x in p[11:15]) + sum(int(f[11]) + int(f[12]) for f in kids.values()))
		EOF
	}
	for r in $(seq "$ROUNDS"); do
		run "pg-authbox-c32" --server "$SRV_ADDR" --pid "$SRV_PID" --no-setup --users 1000 --conc 32
		# -C: a new connection, so a new backend and a SCRAM exchange, per
		# transaction; -j 32: a thread per client, since pgbench makes a
		# connection synchronously in its thread (with -j 1 the 32 clients
		# would connect one at a time). No SSL or GSSAPI negotiation: plain
		# TCP as authbox here (the cluster has ssl off; without these libpq
		# would ask for SSL first and be refused, one more round trip).
		local t0 t1 rc=0
		t0=$(pg_cpu_ticks)
		PGSSLMODE=disable PGGSSENCMODE=disable /usr/bin/time -f '%U %S' -o "$pgd/time.$r" pgbench -h 127.0.0.1 -p "$port" -U bench -C -n -f "$pgd/login.sql" \
			-c 32 -j 32 -T "$secs" postgres >"$pgd/pgbench.$r.log" 2>&1 || rc=$?
		t1=$(pg_cpu_ticks)
		python3 - "$pgd/pgbench.$r.log" "$pgd/time.$r" "$((t1 - t0))" "$(getconf CLK_TCK)" "$rc" >>"$OUT/results.jsonl" <<-'EOF'
			import json, re, sys
			log, timef, ticks, hz, rc = sys.argv[1:]
			text = open(log).read()
			def num(pat):
			    m = re.search(pat, text)
			    return float(m.group(1)) if m else 0.0
			ops = int(num(r"number of transactions actually processed: (\d+)"))
			failed = int(num(r"number of failed transactions: (\d+)"))
			aborted = len(re.findall(r"client \d+ aborted", text))
			if ops == 0 or rc != "0":
			    print(f"warning: pgbench exited with status {rc}, {ops} transactions; see {log}", file=sys.stderr)
			# The last line of time's file: pgbench's own user and system CPU.
			user, system = (float(x) for x in open(timef).read().split()[-2:])
			cpu = int(ticks) / int(hz)
			print(json.dumps({
			    "tag": "pg-postgres-c32", "mode": "login", "conc": 32, "ops": ops, "errors": failed + aborted,
			    "ops_per_sec": num(r"tps = ([0-9.]+) \(including reconnection times\)"),
			    "latency_ms": {"avg": num(r"latency average = ([0-9.]+) ms"), "connect_avg": num(r"average connection time = ([0-9.]+) ms")},
			    "server_cpu_sec": cpu, "server_cpu_us_per_op": cpu / ops * 1e6 if ops else 0,
			    "bench_cpu_us_per_op": (user + system) / ops * 1e6 if ops else 0,
			}))
		EOF
		echo "round $r done"
	done
	summary pg-authbox-c32 pg-postgres-c32
	python3 - "$OUT/results.jsonl" <<-'EOF'
		import json, statistics, sys
		rows = [json.loads(l) for l in open(sys.argv[1])]
		A = [r for r in rows if r["tag"] == "pg-authbox-c32"]
		P = [r for r in rows if r["tag"] == "pg-postgres-c32"]
		n = min(len(A), len(P))
		rate = [A[i]["ops_per_sec"] / P[i]["ops_per_sec"] for i in range(n) if P[i]["ops_per_sec"]]
		cpu = [P[i]["server_cpu_us_per_op"] / A[i]["server_cpu_us_per_op"] for i in range(n) if A[i].get("server_cpu_us_per_op")]
		med = lambda xs: statistics.median(xs) if xs else float("nan")
		print(f"  authbox is ahead by {med(rate):.1f}x in logins/s; postgres spends {med(cpu):.1f}x authbox's server CPU per login (medians of per-round ratios)")
		print(f"  load generator CPU per login: authbox bench {med([r['bench_cpu_us_per_op'] for r in A]):.0f}us, pgbench {med([r['bench_cpu_us_per_op'] for r in P]):.0f}us"
		      " (libpq runs the client's PBKDF2, 4096 iterations, for every connection; authbox bench derives its keys once)")
	EOF
	stop "$SRV_PID"
	"${pg_stop[@]}" >/dev/null
	pg_stop=()
}

if has postgres; then postgres_section; fi

# accounts_vs_1k N LABEL: bench populate of N accounts (timed), the db's
# size per account, and logins against it versus a 1,000-account db, two
# servers driven alternately at 64 clients.
accounts_vs_1k() {
	local n=$1 label=$2 db="$OUT/accounts-$2.db"
	echo "== $label accounts ($n) vs 1,000, alternating, $ROUNDS rounds of $DUR"
	rm -f "$db"
	/usr/bin/time -f "populate: %e s wall, %M KiB max RSS" "$AB" bench populate --db "$db" --users "$n" --iterations 4096
	ls -l "$db" | awk -v n="$n" '{printf "db with %d accounts: %d bytes, %.0f bytes per account\n", n, $5, $5/n}'
	[ -f "$OUT/k.db" ] || "$AB" bench populate --db "$OUT/k.db" --users 1000 --iterations 4096
	start_authbox "$db"
	local big_addr=$SRV_ADDR big_pid=$SRV_PID
	start_authbox "$OUT/k.db"
	local k_addr=$SRV_ADDR k_pid=$SRV_PID
	for r in $(seq "$ROUNDS"); do
		run "accounts-$label" --server "$big_addr" --pid "$big_pid" --no-setup --users "$n" --conc 64
		run "accounts-1k-vs-$label" --server "$k_addr" --pid "$k_pid" --no-setup --users 1000 --conc 64
		echo "round $r done"
	done
	summary "accounts-$label" "accounts-1k-vs-$label"
	stop "$big_pid"
	stop "$k_pid"
}

if has million; then accounts_vs_1k 1000000 1M; fi

if has tenmillion; then
	accounts_vs_1k 10000000 10M
	# 1.5 GB: not left behind in $OUT.
	rm -f "$OUT/accounts-10M.db"
fi

if has register; then
	echo "== registrations at 64 clients (server iterations 4096)"
	start_authbox "$OUT/reg.db"
	for r in $(seq "$ROUNDS"); do
		run "register-c64" --server "$SRV_ADDR" --pid "$SRV_PID" --mode register --conc 64
		run "register-c1" --server "$SRV_ADDR" --pid "$SRV_PID" --mode register --conc 1
	done
	summary register-c64 register-c1
	stop "$SRV_PID"
	echo "-- store only: Store.Create (db.Batch) vs one transaction and fsync per account"
	go test -run '^$' -bench 'BenchmarkRegister/batch=.*/conc=64' -benchtime 3000x -count 3 . | tee "$OUT/register.bench" | grep Benchmark
fi

if has burst; then
	echo "== 10,000-connection burst: server RSS"
	[ -f "$OUT/k.db" ] || "$AB" bench populate --db "$OUT/k.db" --users 1000 --iterations 4096
	start_authbox "$OUT/k.db"
	"$AB" bench --plain --server "$SRV_ADDR" --pid "$SRV_PID" --no-setup --users 1000 --conc 10000 --duration 5s --settle 10s --max-errors 1 | tee "$OUT/burst.txt"
	stop "$SRV_PID"
fi

if has syscalls; then
	echo "== syscalls per login (strace -c -f on the server process)"
	[ -f "$OUT/k.db" ] || "$AB" bench populate --db "$OUT/k.db" --users 1000 --iterations 4096
	start_authbox "$OUT/k.db"
	start_bare
	for who in authbox bare; do
		if [ $who = authbox ]; then pid=$SRV_PID addr=$SRV_ADDR extra=--no-setup; else pid=$BARE_PID addr=$BARE_ADDR extra="--bare --no-setup"; fi
		for reuse in "" --reuse; do
			strace -c -f -p "$pid" -o "$OUT/strace.$who$reuse.txt" &
			st=$!
			sleep 1
			"$AB" bench --plain --json --server "$addr" $extra --users 1000 --conc 32 --duration 3s --warmup 0 $reuse >"$OUT/strace.$who$reuse.json"
			kill -INT $st
			wait $st || true
			python3 - "$OUT/strace.$who$reuse.txt" "$OUT/strace.$who$reuse.json" "$who$reuse" <<'EOF'
import json, sys
txt, js, who = sys.argv[1:]
r = json.load(open(js))
# Logins that finished after the measured window still made syscalls:
# divide by all logins the server served, measured window or not.
done = r["ops"] + r["errors"]
calls = {}
for line in open(txt):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
total = sum(calls.values())
top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
print(f"{who}: {total/done:.1f} syscalls per login over {done} logins: " + ", ".join(f"{k} {v/done:.2f}" for k, v in top))
EOF
		done
	done
	stop "$SRV_PID"
	stop "$BARE_PID"
fi

if has cli; then
	echo "== authbox login: share of wall time in PBKDF2 (600000 iterations)"
	go test -run '^$' -bench 'BenchmarkCLILogin' -benchtime 8x . | grep Benchmark
fi

if has gobench; then
	echo "== Go benchmarks"
	go test -run '^$' -bench 'LoginHandler|LoginClient|StoreGet|ParseLine' -benchmem -count 3 . | tee "$OUT/go.bench" | grep Benchmark
fi

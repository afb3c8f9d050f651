#!/usr/bin/env bash
# SMTP benchmark, side by side in one run: a 3-node Halyard cluster (`halyard demo --nodes 3`:
# three Raft nodes with their own RocksDB, replicating over loopback gRPC; every 250 is
# fsynced on a majority) and a stock Postfix on the same machine (smtpd -> queue -> virtual
# delivery into a Maildir), both fed the same load.
#
#   ./scripts/bench-smtp.sh            # 10 sessions, 20,000 messages of 10 KB per server
#   MESSAGES=5000 ./scripts/bench-smtp.sh
#
#   ROUNDS=5 ./scripts/bench-smtp.sh   # smtp-source rounds (default 3)
#
# Prints `halyard-lab bench-smtp`'s table (messages/s, p50/p99 time from end of data to 250,
# ratio), then ROUNDS alternating rounds of Postfix's own smtp-source against each server,
# with a new connection per message (smtp-source's default) and with -d (connection
# reused), and their medians, then checks that every message was delivered. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-20000}
SESSIONS=${SESSIONS:-10}
ROUNDS=${ROUNDS:-3}
./scripts/deps.sh --test
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/halyard-target}
# The release build (what production runs; the test build keeps debug assertions). The
# first run builds it, RocksDB included: about 25 minutes on 2 cores, then it is cached.
cargo build --release --locked --workspace
BIN=$CARGO_TARGET_DIR/release/halyard
LAB=$CARGO_TARGET_DIR/release/halyard-lab
RUN=$(mktemp -d /tmp/halyard-bench-smtp.XXXXXX)
chmod 755 "$RUN"   # Postfix's daemons run as user postfix
PF=$RUN/postfix
DEMO_PID=""
cleanup() {
  [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null || true
  MAIL_CONFIG=$PF/etc /usr/sbin/postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
  pkill -f "master -c $PF/etc" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT

# --- Postfix: its own configuration and spool under $RUN, listening on 127.0.0.1:2625 -----
mkdir -p "$PF/etc" "$PF/spool" "$PF/data" "$PF/mail"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.postfix.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_tls_security_level = none
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
default_process_limit = 100
EOF
# Debian's master.cf, without chroot, without the pipe services (their users do not exist
# here) and with smtpd on 127.0.0.1:2625.
python3 - "$PF/etc/master.cf" <<'EOF'
import sys
src = open("/etc/postfix/master.cf.proto").read().split("\n")
out, skip = [], False
for l in src:
    if l and not l[0].isspace() and not l.startswith("#"):
        f = l.split()
        skip = f[0] in ("maildrop", "uucp", "ifmail", "bsmtp", "scalemail-backend", "mailman", "postlog", "tlsmgr")
        if not skip and len(f) > 4 and f[4] == "y":
            f[4] = "n"
            l = " ".join(f)
        if f[0] == "smtp" and f[1] == "inet":
            l = "127.0.0.1:2625 inet n - n - - smtpd"
    if not skip:
        out.append(l)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
(cd "$PF/spool" && for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
  mkdir -p "$d"; chown postfix:root "$d"; chmod 700 "$d"; done
  mkdir -p pid maildrop public; chown postfix:postdrop maildrop public; chmod 730 maildrop; chmod 710 public)
chown postfix "$PF/data"; chmod 777 "$PF/mail"
MAIL_CONFIG=$PF/etc /usr/lib/postfix/sbin/master -c "$PF/etc" -d >"$RUN/postfix.log" 2>&1 &

# --- Halyard: 3 nodes ---------------------------------------------------------------------
"$BIN" demo --nodes 3 --data-dir "$RUN/halyard" >"$RUN/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 1 150); do
  grep -q "Demo user" "$RUN/demo.log" 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/2625) 2>/dev/null && break
  sleep 0.2
done
grep -q "Demo user" "$RUN/demo.log" || { cat "$RUN/demo.log"; echo "halyard demo did not start" >&2; exit 1; }

# Mail is accepted by the master of the resource group (the node holding its floating
# address in a real deployment): send to that node's SMTP port.
# The demo user's default quota (1 GiB) would hold later rounds' mail in the queue.
"$BIN" ctl user set demo@demo.test --quota none >/dev/null
LEADER=$(sed -n 's/.*group rg1 *leader: node \([0-9]*\).*/\1/p' "$RUN/demo.log" | head -1)
HPORT=$((2525 + 1000 * (${LEADER:-1} - 1)))
echo "== halyard-lab bench-smtp (kept-alive sessions, pipelined MAIL/RCPT/DATA; master: node ${LEADER:-1}) =="
"$LAB" bench-smtp --sessions "$SESSIONS" --messages "$MESSAGES" --size 10240 \
  --target halyard=127.0.0.1:$HPORT --rcpt halyard=demo@demo.test \
  --target postfix=127.0.0.1:2625 --rcpt postfix=bench@bench.test

echo "== Postfix smtp-source, $ROUNDS alternating rounds per mode =="
# Two modes: a new connection per message (smtp-source's default: connect, EHLO, one
# transaction, QUIT) and -d (the next message over the same connection). Rounds alternate
# between the servers so that whatever else the machine is doing falls on both alike; the
# medians are what to quote.
python3 - "$ROUNDS" "$SESSIONS" "$MESSAGES" "127.0.0.1:$HPORT" <<'PY'
import statistics, subprocess, sys, time
rounds, sessions, messages, hal = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
targets = [("halyard", hal, "demo@demo.test"), ("postfix", "127.0.0.1:2625", "bench@bench.test")]
modes = [("new connection per message", []), ("-d: connection reused", ["-d"])]
summary = []
for label, flags in modes:
    rates = {name: [] for name, _, _ in targets}
    for r in range(rounds):
        for name, addr, rcpt in targets:
            start = time.monotonic()
            subprocess.run(["smtp-source", *flags, "-s", sessions, "-m", str(messages), "-l", "10240",
                            "-f", "sender@bench.example", "-t", rcpt, addr], check=True)
            rate = messages / (time.monotonic() - start)
            rates[name].append(rate)
            print(f"{label:<28} round {r + 1}  {name:<8} {rate:7.0f} msg/s", flush=True)
    h, p = statistics.median(rates["halyard"]), statistics.median(rates["postfix"])
    summary.append(f"{label:<28} median  halyard {h:7.0f} msg/s   postfix {p:7.0f} msg/s   ratio {h / p:.2f}x")
print("\n".join(summary))
PY

echo "== delivered =="
sleep 3
python3 - "$MESSAGES" "$PF/mail/bench" "$ROUNDS" <<'EOF'
import imaplib, os, sys
n = int(sys.argv[1]) * (1 + 2 * int(sys.argv[3]))
m = imaplib.IMAP4("127.0.0.1", 1143)
m.login("demo", "demo-password")
got = int(m.select("INBOX")[1][0])
pf = sum(len(os.listdir(os.path.join(sys.argv[2], d))) for d in ("new", "cur") if os.path.isdir(os.path.join(sys.argv[2], d)))
print(f"halyard INBOX: {got} of {n}; postfix Maildir: {pf} of {n}")
sys.exit(0 if got == n else 1)
EOF

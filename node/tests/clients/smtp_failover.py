"""Acknowledged SMTP messages survive a kill -9 of the master, exactly once.

PHASE=send: sends N messages with smtplib, each to the node last known to accept, moving to
the next node on any failure (451 from a node that is not the master, refused or reset
connections) and retrying the same message (bounded). Records every message that got a 250
in STATE and prints "sent <i>" after each, so the test can kill the master mid-stream.
PHASE=check: logs in over IMAP (any node; the multiplexor relays) and checks that every
acknowledged message is in the INBOX exactly once.
Environment: SMTP_PORTS, IMAP_PORTS (comma-separated), USER, PASSWORD, N, STATE, PHASE.
"""
import imaplib
import os
import re
import smtplib
import sys
import time

HOST = "127.0.0.1"
SMTP = [int(p) for p in os.environ["SMTP_PORTS"].split(",")]
IMAP = [int(p) for p in os.environ["IMAP_PORTS"].split(",")]
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
STATE = os.environ["STATE"]
N = int(os.environ.get("N", "100"))


def send():
    node = 0
    acked = []
    unacked = []
    for i in range(N):
        mid = f"<failover-{i}@test.example>"
        body = (
            f"From: f@test.example\r\nTo: alice@example.org\r\nSubject: failover {i}\r\n"
            f"Message-ID: {mid}\r\n\r\nmessage {i}\r\n"
        ).encode()
        ok = False
        deadline = time.time() + 60
        while not ok and time.time() < deadline:
            try:
                with smtplib.SMTP(HOST, SMTP[node], timeout=10) as s:
                    s.sendmail("f@test.example", ["alice@example.org"], body)
                ok = True
            except (smtplib.SMTPException, OSError):
                node = (node + 1) % len(SMTP)
                time.sleep(0.1)
        (acked if ok else unacked).append(mid)
        with open(STATE, "w") as f:
            f.write("\n".join(acked))
        print(f"sent {i} {'ok' if ok else 'gave up'}", flush=True)
    print(f"acknowledged {len(acked)}, not acknowledged {len(unacked)}", flush=True)


def check():
    acked = [l for l in open(STATE).read().split("\n") if l]
    assert len(acked) > N // 2, f"too few acknowledged: {len(acked)}"
    deadline = time.time() + 90
    counts = {}
    while time.time() < deadline:
        for port in IMAP:
            try:
                M = imaplib.IMAP4(HOST, port, timeout=10)
                M.login(USER, PW)
                typ, data = M.select("INBOX")
                n = int(data[0])
                counts = {}
                if n:
                    typ, data = M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                    for p in data:
                        if isinstance(p, tuple):
                            m = re.search(rb"<[^>]+>", p[1])
                            if m:
                                k = m.group(0).decode()
                                counts[k] = counts.get(k, 0) + 1
                M.logout()
                break
            except (imaplib.IMAP4.error, OSError):
                continue
        if all(counts.get(m, 0) >= 1 for m in acked):
            break
        time.sleep(0.5)
    missing = [m for m in acked if counts.get(m, 0) == 0]
    dupes = [m for m in acked if counts.get(m, 0) > 1]
    assert not missing, f"acknowledged but lost: {missing}"
    assert not dupes, f"acknowledged and duplicated: {dupes}"
    print(f"all {len(acked)} acknowledged messages present exactly once "
          f"({sum(counts.values())} messages in the INBOX)")


{"send": send, "check": check}[os.environ["PHASE"]]()

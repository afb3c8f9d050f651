"""Checks a mailbox after a failover drill, over IMAP through the floating address.

Environment: IMAP_HOST, USER, PASSWORD; WANT_IDS: comma-separated queue ids that got a 250
(from the Received: header each message carries). Waits (bounded) until every wanted id is
there, then fails if any is missing or present more than once. Prints a one-line summary.
"""
import imaplib
import os
import re
import time

want = [s for s in os.environ.get("WANT_IDS", "").split(",") if s]
host = os.environ["IMAP_HOST"]
got = {}
last_err = None
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        M = imaplib.IMAP4(host, 143, timeout=10)
        M.login(os.environ["USER"], os.environ["PASSWORD"])
        n = int(M.select("INBOX")[1][0])
        got = {}
        if n:
            typ, data = M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (RECEIVED)])")
            for p in data:
                if isinstance(p, tuple):
                    m = re.search(rb"\bid (\S+)", p[1])
                    if m:
                        qid = m.group(1).decode().rstrip(";")
                        got[qid] = got.get(qid, 0) + 1
        M.logout()
        if all(q in got for q in want):
            break
    except (OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort) as e:
        # The master may be moving: reconnect to the address.
        last_err = e
    time.sleep(0.2)
missing = [q for q in want if q not in got]
dups = {q: c for q, c in got.items() if c > 1}
print(f"mailbox: {sum(got.values())} messages, {len(want)} acknowledged, "
      f"{len(missing)} missing, {len(dups)} duplicated (last error: {last_err})")
assert not missing, ("acknowledged but missing", missing[:10])
assert not dups, ("duplicated", dups)

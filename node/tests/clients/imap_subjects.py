"""Waits until a user's INBOX holds exactly the expected subjects (as a multiset).

Environment: IMAP_PORT, USER, PASSWORD, EXPECT (comma-separated subjects).
"""
import imaplib
import os
import time

want = sorted(s for s in os.environ["EXPECT"].split(",") if s)
M = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP_PORT"]))
M.login(os.environ["USER"], os.environ["PASSWORD"])
got = []
for _ in range(100):
    n = int(M.select("INBOX")[1][0])
    got = []
    if n:
        for p in M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]:
            if isinstance(p, tuple):
                got.append(p[1].decode().split(":", 1)[1].strip())
    got.sort()
    if got == want:
        break
    time.sleep(0.1)
assert got == want, (os.environ["USER"], got, want)
print(f"{os.environ['USER']}: {got}")

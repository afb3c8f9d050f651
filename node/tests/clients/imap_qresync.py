"""QRESYNC (RFC 7162) over a raw socket against a running Halyard, exact answers:
ENABLE QRESYNC, SELECT with the QRESYNC parameter (VANISHED (EARLIER) from the replicated
tombstones, FETCH of what changed), VANISHED instead of EXPUNGE, UID FETCH with
(CHANGEDSINCE m VANISHED), [CLOSED] when a SELECT replaces the selected mailbox, and the
errors for QRESYNC used without ENABLE.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
"""
import os
import re

import imapraw

USER, PW = os.environ["USER"], os.environ["PASSWORD"]


def Raw():
    return imapraw.Raw("q")


def one(lines, prefix):
    found = [l for l in lines if l.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


A, B = Raw(), Raw()
A.ok(f"LOGIN {USER} {PW}")
B.ok(f"LOGIN {USER} {PW}")
A.ok("CREATE qr")
msg = "From: a@example.org\r\nSubject: q\r\n\r\nbody\r\n"
for _ in range(7):
    A.append("qr", msg)

# QRESYNC before ENABLE is a BAD; ENABLE answers ENABLED QRESYNC.
lines, done = A.cmd("SELECT qr (QRESYNC (1 1))")
assert done.split()[1] == b"BAD", (lines, done)
lines = A.ok("ENABLE QRESYNC")
assert one(lines, b"* ENABLED").upper().split()[2:] == [b"QRESYNC"], lines
B.ok("ENABLE QRESYNC")

lines = A.ok("SELECT qr")
uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", b"".join(lines)).group(1))
# An expunge the client will already know of: the exact answers below leave it out (a
# server without tombstones would have to name it again).
first = int(one(A.ok("UID SEARCH ALL"), b"* SEARCH").split()[2])
A.ok(f"UID STORE {first} +FLAGS.SILENT (\\Deleted)")
lines = A.ok(f"UID EXPUNGE {first}")
assert one(lines, b"* VANISHED") == f"* VANISHED {first}\r\n".encode(), lines
modseq0 = int(re.search(rb"HIGHESTMODSEQ (\d+)", one(A.ok("STATUS qr (HIGHESTMODSEQ)"), b"* STATUS")).group(1))
uids = [int(x) for x in one(A.ok("UID SEARCH ALL"), b"* SEARCH").split()[2:]]
assert len(uids) == 6 and first not in uids, uids

# Another session expunges two messages and flags one: A hears VANISHED, not EXPUNGE.
B.ok("SELECT qr")
B.ok(f"UID STORE {uids[1]},{uids[3]} +FLAGS (\\Deleted)")
B.ok(f"UID EXPUNGE {uids[1]},{uids[3]}")
B.ok(f"UID STORE {uids[4]} +FLAGS (\\Flagged)")
lines = A.ok("NOOP")
assert not any(b"EXPUNGE" in l for l in lines), lines
assert one(lines, b"* VANISHED") == f"* VANISHED {uids[1]},{uids[3]}\r\n".encode(), lines

# A client that knew the mailbox at modseq0 resynchronises in its SELECT: [CLOSED] for the
# mailbox it leaves, VANISHED (EARLIER) with exactly the two, a FETCH of the changed one.
lines = A.ok(f"SELECT qr (QRESYNC ({uidvalidity} {modseq0}))")
assert lines[0].startswith(b"* OK [CLOSED]"), lines
v = one(lines, b"* VANISHED")
assert v == f"* VANISHED (EARLIER) {uids[1]},{uids[3]}\r\n".encode(), lines
fetched = [l for l in lines if b" FETCH " in l]
assert len(fetched) == 1 and f"UID {uids[4]}".encode() in fetched[0], lines
assert b"\\Flagged" in fetched[0] and b"MODSEQ" in fetched[0], fetched
# known-uids limits VANISHED (EARLIER) to what the client names.
lines = A.ok(f"SELECT qr (QRESYNC ({uidvalidity} {modseq0} {uids[3]}:{uids[5]}))")
assert one(lines, b"* VANISHED") == f"* VANISHED (EARLIER) {uids[3]}\r\n".encode(), lines
# A wrong UIDVALIDITY: a plain SELECT, nothing vanished.
lines = A.ok(f"SELECT qr (QRESYNC ({uidvalidity + 1} {modseq0}))")
assert not any(l.startswith(b"* VANISHED") for l in lines), lines

# UID FETCH … (CHANGEDSINCE m VANISHED): what vanished in the set, then what changed.
lines = A.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq0} VANISHED)")
assert lines[0] == f"* VANISHED (EARLIER) {uids[1]},{uids[3]}\r\n".encode(), lines
assert len([l for l in lines if b" FETCH " in l]) == 1, lines
lines, done = A.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq0} VANISHED)")
assert done.split()[1] == b"BAD", (lines, done)  # only UID FETCH may ask for VANISHED
A.ok("UNSELECT")
A.ok("DELETE qr")
A.ok("LOGOUT")
B.ok("LOGOUT")
print("imap_qresync: all scenarios passed")

"""OBJECTID (RFC 8474) over a raw socket against a running Halyard: MAILBOXID on CREATE,
SELECT, STATUS and LIST-STATUS, kept across RENAME and new after DELETE; EMAILID and THREADID
as FETCH items (with and without UID, beside other items), kept by COPY and MOVE; the
EMAILID and THREADID search keys, also in ESEARCH and SORT.

The identifiers' values are the server's business: the script checks their syntax and the
invariants the RFC states (equal where it says equal, different where it says different).

Environment: IMAP_PORT, USER, PASSWORD (alice), HOST.
"""
import os
import re

import imapraw

USER, PW = os.environ["USER"], os.environ["PASSWORD"]
OBJECTID = r"[A-Za-z0-9_-]{1,255}"


class Raw(imapraw.Raw):
    def __init__(self):
        super().__init__("o", strip_tag=True)

    def one(self, text, pattern):
        """The command succeeds with exactly one untagged line, matching `pattern` whole;
        returns its groups."""
        lines = self.ok(text)
        assert len(lines) == 1, f"{text}: {lines}"
        m = re.fullmatch(pattern.encode(), lines[0].rstrip(b"\r\n"))
        assert m, f"{text}: {lines[0]!r} does not match {pattern}"
        return [g.decode() for g in m.groups()]


def mailboxid_of_create(c, name):
    lines, done = c.cmd(f"CREATE {name}")
    m = re.fullmatch(rf"OK \[MAILBOXID \(({OBJECTID})\)\] .*".encode(), done.rstrip())
    assert m and not lines, f"CREATE {name}: {done} {lines}"
    return m.group(1).decode()


def mailboxid_of_status(c, name):
    return c.one(f"STATUS {name} (MAILBOXID)",
                 rf"\* STATUS {name} \(MAILBOXID \(({OBJECTID})\)\)")[0]


def ids(c, cmd):
    """seq -> (EMAILID, THREADID) from a FETCH of exactly those two items."""
    out = {}
    for l in c.ok(cmd):
        m = re.fullmatch(
            rf"\* (\d+) FETCH \(EMAILID \(({OBJECTID})\) THREADID \(({OBJECTID})\)\)".encode(),
            l.rstrip(b"\r\n"))
        assert m, f"{cmd}: {l!r}"
        out[int(m.group(1))] = (m.group(2).decode(), m.group(3).decode())
    return out


c = Raw()
c.ok(f"LOGIN {USER} {PW}")
caps = [l for l in c.ok("CAPABILITY") if l.startswith(b"* CAPABILITY ")]
assert b" OBJECTID" in caps[0], caps

# --- MAILBOXID ------------------------------------------------------------------------------
f1 = mailboxid_of_create(c, "oid")
f2 = mailboxid_of_create(c, "oid-other")
assert f1 != f2 and f1 != mailboxid_of_status(c, "INBOX")
assert mailboxid_of_status(c, "oid") == f1
# In the order asked, beside numeric items.
got = c.one("STATUS oid (MESSAGES MAILBOXID UIDNEXT)",
            rf"\* STATUS oid \(MESSAGES 0 MAILBOXID \(({OBJECTID})\) UIDNEXT 1\)")
assert got == [f1], got
lines = c.ok("SELECT oid")
assert f"* OK [MAILBOXID ({f1})] Ok\r\n".encode() in lines, lines
lines = c.ok("EXAMINE oid-other")
assert f"* OK [MAILBOXID ({f2})] Ok\r\n".encode() in lines, lines
c.ok("UNSELECT")
# RENAME keeps it; a mailbox created under the old name gets a new one; DELETE and CREATE
# again gives another.
c.ok("RENAME oid oid-renamed")
assert mailboxid_of_status(c, "oid-renamed") == f1
f3 = mailboxid_of_create(c, "oid")
assert f3 not in (f1, f2)
c.ok("DELETE oid")
f4 = mailboxid_of_create(c, "oid")
assert f4 not in (f1, f2, f3)
c.ok("DELETE oid")
c.ok("RENAME oid-renamed oid")
assert mailboxid_of_status(c, "oid") == f1
# LIST-STATUS carries it too.
lines = c.ok('LIST "" "oid*" RETURN (STATUS (MAILBOXID MESSAGES))')
assert f"* STATUS oid (MAILBOXID ({f1}) MESSAGES 0)\r\n".encode() in lines, lines
assert f"* STATUS oid-other (MAILBOXID ({f2}) MESSAGES 0)\r\n".encode() in lines, lines
# STATUS of a mailbox that is not there: NO, nothing untagged.
lines, done = c.cmd("STATUS oid-missing (MAILBOXID)")
assert done.startswith(b"NO") and not lines, (lines, done)

# --- EMAILID and THREADID -------------------------------------------------------------------
A = ("From: a@example.org\r\nSubject: A\r\nMessage-ID: <a@example.org>\r\n\r\nfirst\r\n")
B = ("From: b@example.org\r\nSubject: Re: A\r\nMessage-ID: <b@example.org>\r\n"
     "In-Reply-To: <a@example.org>\r\nReferences: <a@example.org>\r\n\r\nreply\r\n")
C = ("From: c@example.org\r\nSubject: C\r\nMessage-ID: <c@example.org>\r\n\r\nother\r\n")
# A reply to the reply: its References start at the root, so it is in A's thread.
D = ("From: d@example.org\r\nSubject: Re: A\r\nMessage-ID: <d@example.org>\r\n"
     "In-Reply-To: <b@example.org>\r\nReferences: <a@example.org> <b@example.org>\r\n\r\n"
     "deeper\r\n")
DATE = '"07-Dec-2026 10:00:00 +0000"'
for body in (A, B, C, D):
    c.ok(f"APPEND oid {DATE} {{{len(body)}+}}\r\n{body}")
# A again, with another INTERNALDATE: another message, so another EMAILID, same thread.
c.ok(f'APPEND oid "08-Dec-2026 10:00:00 +0000" {{{len(A)}+}}\r\n{A}')
c.ok("SELECT oid")
got = ids(c, "FETCH 1:* (EMAILID THREADID)")
assert sorted(got) == [1, 2, 3, 4, 5], got
emails = [got[n][0] for n in range(1, 6)]
threads = [got[n][1] for n in range(1, 6)]
assert len(set(emails)) == 5, emails
assert all(e.startswith("M") for e in emails) and all(t.startswith("T") for t in threads)
assert threads[0] == threads[1] == threads[3] == threads[4], threads
assert threads[2] != threads[0], threads
assert not set(emails) & set(threads)
# The same answer again (immutable), and item by item.
assert ids(c, "FETCH 1:* (EMAILID THREADID)") == got
assert c.one("FETCH 3 (EMAILID)", rf"\* 3 FETCH \(EMAILID \(({OBJECTID})\)\)") == [emails[2]]
assert c.one("FETCH 3 THREADID", rf"\* 3 FETCH \(THREADID \(({OBJECTID})\)\)") == [threads[2]]
# UID FETCH adds UID; UID asked for as well comes once; other items keep their places.
assert c.one("UID FETCH 2 (EMAILID)",
             rf"\* 2 FETCH \(UID 2 EMAILID \(({OBJECTID})\)\)") == [emails[1]]
assert c.one("FETCH 2 (UID FLAGS EMAILID UID)",
             rf"\* 2 FETCH \(UID 2 FLAGS \(\\Recent\) EMAILID \(({OBJECTID})\)\)") == [emails[1]]
lines = c.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[HEADER.FIELDS (Subject EMAILID)] THREADID)")
want = (f"* 1 FETCH (RFC822.SIZE {len(A)} BODY[HEADER.FIELDS (SUBJECT EMAILID)] {{14}}\r\n")
assert lines[0].upper() == want.upper().encode(), lines
assert lines[1] == b"Subject: A\r\n", lines
assert lines[3] == f" THREADID ({threads[0]}))\r\n".encode(), lines

# --- SEARCH ---------------------------------------------------------------------------------
assert c.ok(f"SEARCH EMAILID {emails[2]}") == [b"* SEARCH 3\r\n"]
assert c.ok(f"SEARCH THREADID {threads[0]}") == [b"* SEARCH 1 2 4 5\r\n"]
assert c.ok(f"UID SEARCH OR EMAILID {emails[0]} EMAILID {emails[2]}") == [b"* SEARCH 1 3\r\n"]
assert c.ok(f"SEARCH NOT THREADID {threads[0]}") == [b"* SEARCH 3\r\n"]
assert c.ok("SEARCH EMAILID M0000nothing") == [b"* SEARCH\r\n"]
# Case matters in an objectid.
assert c.ok(f"SEARCH EMAILID {emails[2].lower()}") == [b"* SEARCH\r\n"]
lines = c.ok(f"SEARCH RETURN (COUNT MIN) THREADID {threads[0]}")
assert lines == [b'* ESEARCH (TAG "o%d") MIN 1 COUNT 4\r\n' % c.n], lines
# ARRIVAL is INTERNALDATE: 5 is the latest, 1, 2 and 4 tie and keep sequence order.
lines = c.ok(f"SORT (REVERSE ARRIVAL) UTF-8 THREADID {threads[0]}")
assert lines == [b"* SORT 5 1 2 4\r\n"], lines
st, done = c.status('SEARCH EMAILID "M1"')
assert st == b"BAD", done
st, done = c.status("SEARCH EMAILID M.1")
assert st == b"BAD", done

# --- COPY and MOVE keep EMAILID and THREADID -------------------------------------------------
c.ok("COPY 3 oid-other")
c.ok("MOVE 2 oid-other")
c.ok("SELECT oid-other")
moved = ids(c, "FETCH 1:* (EMAILID THREADID)")
assert moved == {1: (emails[2], threads[2]), 2: (emails[1], threads[1])}, moved
# And the source still has the copied message with the same EMAILID.
c.ok("SELECT oid")
assert c.ok(f"SEARCH EMAILID {emails[2]}") == [b"* SEARCH 2\r\n"]
c.ok("LOGOUT")
print("imap_objectid: ok")

"""Exact RFC 3501 answers, one scenario per defect a conformance run found (issue 21), over a
raw imaplib session against a running Halyard.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
Exits non-zero (with the failing assertion) on any deviation.
"""
import imaplib
import os

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]


def ok(r, what=""):
    typ, data = r
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


M = imaplib.IMAP4(HOST, PORT)
ok(M.login(USER, PW))
ok(M.create("rfc3501-dates"))
ok(M.select("rfc3501-dates"))


def append(date_header, internal):
    msg = (
        b"From: a@example.org\r\nTo: b@example.org\r\nSubject: dates\r\n"
        + b"Date: " + date_header.encode() + b"\r\n\r\nbody\r\n"
    )
    ok(M.append("rfc3501-dates", None, internal, msg))


# --- item 3: SENT* compare the Date: header's calendar date in its own zone ---------------
# 1: written 25-Mar-2007 (+0300), which is 24-Mar-2007 22:30 in UTC.
append("Sun, 25 Mar 2007 01:30:00 +0300", '"25-Mar-2007 01:30:00 +0000"')
# 2: written 24-Mar-2007 (-0500), which is 25-Mar-2007 04:30 in UTC.
append("Sat, 24 Mar 2007 23:30:00 -0500", '"24-Mar-2007 12:00:00 +0000"')
# 3: written 26-Mar-2007 in UTC.
append("Mon, 26 Mar 2007 00:00:00 +0000", '"26-Mar-2007 00:00:00 +0000"')


def search(*c):
    return ok(M.search(None, *c), " ".join(c))[0].split()


assert search("SENTON", "25-Mar-2007") == [b"1"], search("SENTON", "25-Mar-2007")
assert search("SENTON", "24-Mar-2007") == [b"2"], search("SENTON", "24-Mar-2007")
assert search("SENTBEFORE", "25-Mar-2007") == [b"2"], search("SENTBEFORE", "25-Mar-2007")
assert search("SENTSINCE", "25-Mar-2007") == [b"1", b"3"], search("SENTSINCE", "25-Mar-2007")
assert search("SENTBEFORE", "26-Mar-2007", "SENTSINCE", "25-Mar-2007") == [b"1"]
# BEFORE/ON/SINCE: INTERNALDATE's date, as FETCH INTERNALDATE shows it (+0000).
assert search("ON", "25-Mar-2007") == [b"1"], search("ON", "25-Mar-2007")
assert search("BEFORE", "25-Mar-2007") == [b"2"], search("BEFORE", "25-Mar-2007")
assert search("SINCE", "25-Mar-2007") == [b"1", b"3"], search("SINCE", "25-Mar-2007")

ok(M.close())
ok(M.delete("rfc3501-dates"))


# --- a raw session, to see the order of untagged responses ---------------------------------
import imapraw


def Raw():
    return imapraw.Raw("r")


def nums(lines, word=b"SEARCH"):
    found = [l for l in lines if l.startswith(b"* " + word)]
    assert len(found) == 1, lines
    return [int(x) for x in found[0].split()[2:]]


def flags_line(lines):
    return [l for l in lines if l.startswith(b"* FLAGS ")]


def first(lines, pred):
    return next((i for i, l in enumerate(lines) if pred(l)), None)


# --- item 2: a keyword is announced (FLAGS, PERMANENTFLAGS) before a response shows it -----
ok(M.create("rfc3501-kw"))
kwmsg = b"From: a@example.org\r\nSubject: kw\r\n\r\nbody\r\n"
ok(M.append("rfc3501-kw", r"(\Seen $Existing)", None, kwmsg))
ok(M.append("rfc3501-kw", None, None, kwmsg))
A, B = Raw(), Raw()
A.ok(f"LOGIN {USER} {PW}")
B.ok(f"LOGIN {USER} {PW}")
sel = A.ok("SELECT rfc3501-kw")
fl = flags_line(sel)
assert len(fl) == 1 and b"$Existing" in fl[0], sel  # SELECT lists the keywords in use
perm = [l for l in sel if b"[PERMANENTFLAGS" in l]
assert len(perm) == 1 and b"$Existing" in perm[0] and b"\\*" in perm[0], sel
# Another session brings a new keyword: A's next response announces it before the FETCH.
B.ok("SELECT rfc3501-kw")
B.ok("STORE 2 +FLAGS ($label1)")
lines = A.ok("NOOP")
f_at = first(lines, lambda l: l.startswith(b"* FLAGS ") and b"$label1" in l)
p_at = first(lines, lambda l: b"[PERMANENTFLAGS" in l and b"$label1" in l)
x_at = first(lines, lambda l: b"FETCH" in l and b"$label1" in l)
assert None not in (f_at, p_at, x_at) and f_at < x_at and p_at < x_at, lines
assert b"$Existing" in lines[f_at], lines  # the new list still has the old keywords
# Once announced, not again.
B.ok("STORE 1 +FLAGS ($label1)")
lines = A.ok("NOOP")
assert flags_line(lines) == [] and any(b"FETCH" in l for l in lines), lines
# The session's own STORE with a new keyword: announced before its FETCH answer.
lines = A.ok("STORE 1 +FLAGS ($own)")
f_at = first(lines, lambda l: l.startswith(b"* FLAGS ") and b"$own" in l)
x_at = first(lines, lambda l: b"FETCH" in l and b"$own" in l)
assert f_at is not None and x_at is not None and f_at < x_at, lines
# A keyword that arrives with a new message (APPEND by another session), seen by FETCH.
B.ok("UNSELECT")
ok(M.append("rfc3501-kw", "($fromAppend)", None, kwmsg))
lines = A.ok("FETCH 1:* (FLAGS)")
f_at = first(lines, lambda l: l.startswith(b"* FLAGS ") and b"$fromAppend" in l)
x_at = first(lines, lambda l: b"FETCH" in l and b"$fromAppend" in l)
assert f_at is not None and x_at is not None and f_at < x_at, lines
# --- item 5: ENVELOPE of group syntax: start marker, members, end marker, nothing else -----
grp = (
    b"From: a@example.org\r\nTo: group: g1@d1.org, g2@d2.org;, group2: ;\r\n"
    b"Cc: x@example.org, team: t1@example.org;\r\nSubject: groups\r\n\r\nbody\r\n"
)
ok(M.append("rfc3501-kw", None, None, grp))
lines = A.ok("FETCH 4 (ENVELOPE)")
env = b"".join(l for l in lines if b"ENVELOPE" in l)
want_to = (
    b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
    b'(NIL NIL "group2" NIL)(NIL NIL NIL NIL))'
)
want_cc = (
    b'((NIL NIL "x" "example.org")(NIL NIL "team" NIL)(NIL NIL "t1" "example.org")'
    b"(NIL NIL NIL NIL))"
)
assert want_to + b" " + want_cc in env, env
# --- item 6: hierarchies ---------------------------------------------------------------
A.ok("UNSELECT")
A.ok("CREATE h6/")  # a trailing separator declares a level: the name is h6
lines = A.ok('LIST "" h6')
assert len(lines) == 1 and lines[0].rstrip().endswith(b'"/" h6'), lines
A.ok("CREATE h6/a/b/test4")
A.ok("CREATE h6/x/test/y")


def listed(lines):
    return {l.rstrip().rsplit(b" ", 1)[1]: l for l in lines if l.startswith((b"* LIST", b"* LSUB"))}


got = listed(A.ok('LIST "" h6/%'))
assert set(got) == {b"h6/a", b"h6/x"}, got
got = listed(A.ok('LIST "" h6/%/%'))
assert set(got) == {b"h6/a/b", b"h6/x/test"}, got
got = listed(A.ok('LIST "" h6/*test4'))
assert set(got) == {b"h6/a/b/test4"}, got
got = listed(A.ok('LIST "" h6/*test*'))
assert set(got) == {b"h6/a/b/test4", b"h6/x/test", b"h6/x/test/y"}, got
# LSUB "%" shows a non-subscribed level above a subscribed name, as \Noselect. (CREATE
# subscribes what it creates: start from one subscribed name.)
for name in ["h6", "h6/a", "h6/a/b", "h6/x", "h6/x/test", "h6/x/test/y"]:
    A.cmd("UNSUBSCRIBE " + name)
A.ok("SUBSCRIBE h6/a/b/test4")
got = listed(A.ok('LSUB "" h6/%'))
assert set(got) == {b"h6/a"} and b"\\Noselect" in got[b"h6/a"], got
got = listed(A.ok('LSUB "" h6/*'))
assert set(got) == {b"h6/a/b/test4"}, got
A.ok("UNSUBSCRIBE h6/a/b/test4")
for name in ["h6/a/b/test4", "h6/x/test/y", "h6"]:
    A.cmd("DELETE " + name)

# --- item 7: a name that is not modified UTF-7 is a NO; the session goes on ---------------
lines, done = A.cmd("SELECT &Jjo!-")
assert done.split()[1] == b"NO", (lines, done)
lines, done = A.cmd('LIST "" "&Jjo!-*"')
assert done.split()[1] in (b"NO", b"BAD"), (lines, done)
lines, done = A.cmd('LIST "" "%&Jjo!-%"')
assert done.split()[1] in (b"NO", b"BAD"), (lines, done)
A.ok("NOOP")

A.ok("LOGOUT")
B.ok("LOGOUT")

# --- item 4: a message/rfc822 part (a forwarded mail, a digest entry) and its sections ----
INNER = (
    b"Subject: inner\r\nTo: b@example.org\r\nContent-Type: multipart/alternative; boundary=yy\r\n\r\n"
    b"--yy\r\nContent-Type: text/plain\r\n\r\nplain\r\n--yy\r\nContent-Type: text/html\r\n\r\n"
    b"<p>html</p>\r\n--yy--\r\n"
)
fwd = (
    b"From: a@example.org\r\nSubject: fwd\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--zz\r\n"
    b"Content-Type: message/rfc822\r\nContent-Description: old\r\n\r\n" + INNER + b"\r\n--zz--\r\n"
)
digest = (
    b"Subject: digest\r\nContent-Type: multipart/digest; boundary=dd\r\n\r\n"
    b"--dd\r\n\r\nSubject: first\r\n\r\none\r\n--dd\r\n\r\nSubject: second\r\n\r\ntwo\r\n--dd--\r\n"
)
ok(M.create("rfc3501-parts"))
ok(M.append("rfc3501-parts", None, None, fwd))
ok(M.append("rfc3501-parts", None, None, digest))
ok(M.select("rfc3501-parts"))


def section(n, spec):
    data = ok(M.fetch(str(n), f"(BODY.PEEK[{spec}])"), spec)
    if isinstance(data[0], tuple):  # a literal
        return data[0][1]
    # A short section may come as a quoted string: 1 (BODY[2.1] "plain")
    head, _, rest = data[0].partition(b"] ")
    assert rest.startswith(b'"') and rest.endswith(b'")'), (spec, data)
    return rest[1:-2].replace(b'\\"', b'"').replace(b"\\\\", b"\\")


assert section(1, "2") == INNER
assert section(1, "2.HEADER") == INNER.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
assert section(1, "2.TEXT") == INNER.split(b"\r\n\r\n", 1)[1]
assert section(1, "2.HEADER.FIELDS (TO)") == b"To: b@example.org\r\n\r\n"
assert section(1, "2.HEADER.FIELDS.NOT (TO CONTENT-TYPE)") == b"Subject: inner\r\n\r\n"
assert section(1, "2.MIME") == b"Content-Type: message/rfc822\r\nContent-Description: old\r\n\r\n"
assert section(1, "2.1") == b"plain"
assert section(1, "2.2") == b"<p>html</p>"
assert section(2, "1") == b"Subject: first\r\n\r\none"
assert section(2, "2.HEADER") == b"Subject: second\r\n\r\n"
assert section(2, "2.TEXT") == b"two"
assert section(2, "2.1") == b"two"
ok(M.close())
ok(M.delete("rfc3501-parts"))

# --- item 1: \Recent, claimed by exactly one session -------------------------------------
ok(M.create("rfc3501-recent"))
rmsg = b"From: a@example.org\r\nSubject: recent\r\n\r\nbody\r\n"
ok(M.append("rfc3501-recent", None, None, rmsg))
ok(M.append("rfc3501-recent", r"(\Seen)", None, rmsg))
st = ok(M.status("rfc3501-recent", "(RECENT MESSAGES)"))[0]
assert b"RECENT 2" in st and b"MESSAGES 2" in st, st
R1, R2, RE = Raw(), Raw(), Raw()
for r in (R1, R2, RE):
    r.ok(f"LOGIN {USER} {PW}")
lines = RE.ok("EXAMINE rfc3501-recent")  # EXAMINE shows, but does not take, \Recent
assert b"* 2 RECENT\r\n" in lines, lines
lines = R1.ok("SELECT rfc3501-recent")
assert b"* 2 EXISTS\r\n" in lines and b"* 2 RECENT\r\n" in lines, lines
lines = R1.ok("FETCH 1:* (FLAGS)")
assert all(b"\\Recent" in l for l in lines if b"FETCH" in l) and len(lines) == 2, lines
assert nums(R1.ok("SEARCH RECENT")) == [1, 2]
assert nums(R1.ok("SEARCH NEW")) == [1]  # recent and not \Seen
assert nums(R1.ok("SEARCH OLD")) == []
lines = R2.ok("SELECT rfc3501-recent")  # the second session: nothing is recent any more
assert b"* 0 RECENT\r\n" in lines, lines
lines = R2.ok("FETCH 1:* (FLAGS)")
assert not any(b"\\Recent" in l for l in lines), lines
assert nums(R2.ok("SEARCH OLD")) == [1, 2] and nums(R2.ok("SEARCH RECENT")) == []
st = ok(M.status("rfc3501-recent", "(RECENT)"))[0]
assert b"RECENT 0" in st, st
# A new message is recent in the first selected session that learns of it, only there.
ok(M.append("rfc3501-recent", None, None, rmsg))
st = ok(M.status("rfc3501-recent", "(RECENT)"))[0]
assert b"RECENT 1" in st, st
lines = R1.ok("NOOP")
assert b"* 3 EXISTS\r\n" in lines and b"* 3 RECENT\r\n" in lines, lines
lines = R2.ok("NOOP")
assert b"* 3 EXISTS\r\n" in lines and b"* 0 RECENT\r\n" in lines, lines
lines = R1.ok("FETCH 3 (FLAGS)")
assert b"\\Recent" in lines[0], lines
lines = R2.ok("FETCH 3 (FLAGS)")
assert b"\\Recent" not in lines[0], lines
st = ok(M.status("rfc3501-recent", "(RECENT)"))[0]
assert b"RECENT 0" in st, st
# A session's own APPEND into its selected mailbox is recent there.
lines = R2.ok("APPEND rfc3501-recent {%d+}\r\n%s" % (len(rmsg), rmsg.decode()))
lines = R2.ok("NOOP") + lines
assert b"* 4 EXISTS\r\n" in lines and b"* 1 RECENT\r\n" in lines, lines

# --- item 8: MOVE and COPY into the selected mailbox itself ------------------------------
uids = nums(R1.ok("UID SEARCH ALL"))
assert len(uids) == 4, uids
lines, done = R1.cmd(f"UID MOVE {uids[0]} rfc3501-recent")
assert done.split()[1] == b"OK", (lines, done)
cu = [l for l in lines if b"[COPYUID" in l]
assert len(cu) == 1 and f" {uids[0]} {uids[-1] + 1}]".encode() in cu[0], lines
assert b"* 1 EXPUNGE\r\n" in lines and b"* 4 EXISTS\r\n" in lines, lines
lines, done = R1.cmd(f"UID COPY {uids[1]} rfc3501-recent")
assert done.split()[1] == b"OK" and b"[COPYUID" in done, (lines, done)
assert b"* 5 EXISTS\r\n" in lines, lines
assert nums(R1.ok("UID SEARCH ALL")) == uids[1:] + [uids[-1] + 1, uids[-1] + 2]
for r in (R1, R2, RE):
    r.ok("LOGOUT")
ok(M.delete("rfc3501-recent"))

# --- item 10: complex sequence sets, then a clean LOGOUT ---------------------------------
C = Raw()
C.ok(f"LOGIN {USER} {PW}")
C.ok("SELECT rfc3501-kw")  # 4 messages


assert nums(C.ok("SEARCH 1:*")) == [1, 2, 3, 4]
assert nums(C.ok("SEARCH *:1")) == [1, 2, 3, 4]
assert nums(C.ok("SEARCH 3:2,2:3,4")) == [2, 3, 4]
uids = nums(C.ok("UID SEARCH ALL"))
assert nums(C.ok(f"UID SEARCH UID {uids[-1] + 1000}:{uids[-1] + 2000}")) == []
# A UID range past UIDNEXT still names the last message when it ends in * (RFC 3501 6.4.8).
assert nums(C.ok(f"UID SEARCH UID {uids[-1] + 1000}:*")) == [uids[-1]]
# Huge ranges cost what small ones do (they used to be expanded number by number).
lines = C.ok("UID FETCH 1:4294967295 (FLAGS)")
assert sum(1 for l in lines if b" FETCH " in l) == 4, lines
assert nums(C.ok("SEARCH 1:4294967295 UID 1:4294967295")) == [1, 2, 3, 4]
# SEARCHRES (RFC 5182): before any SEARCH RETURN (SAVE), `$` is the empty set, not an error.
assert nums(C.ok("SEARCH $")) == []
lines, done = C.cmd("LOGOUT")
assert any(l.startswith(b"* BYE") for l in lines) and done.split()[1] == b"OK", (lines, done)
ok(M.delete("rfc3501-kw"))
M.logout()
print("imap_rfc3501: all scenarios passed")

"""Every IMAP command a client uses, through Python's imaplib, against a running Halyard.

Environment: IMAP_PORT, USER, PASSWORD, USER2, PASSWORD2 (a second account), HOST.
Exits non-zero (with the failing assertion) on any deviation.
"""
import imaplib
import os
import re
import socket
import threading
import time

imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))
imaplib.Commands.setdefault("MOVE", ("SELECTED",))
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
USER2, PW2 = os.environ["USER2"], os.environ["PASSWORD2"]


def ok(r, what=""):
    typ, data = r
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


def no(fn, *a):
    try:
        typ, data = fn(*a)
    except imaplib.IMAP4.error as e:
        return str(e)
    assert typ != "OK", f"expected failure, got {typ} {data}"
    return data


MSG = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: Bob <bob@example.org>, team: carol@example.org;\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= meeting\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob, the agenda is attached.\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/pdf; name=agenda.pdf\r\n"
    b"Content-Disposition: attachment; filename=agenda.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XYZ--\r\n"
)
PLAIN = b"From: x@example.org\r\nSubject: plain one\r\n\r\nline one\r\nline two\r\n"

# --- not authenticated -------------------------------------------------------------------
M = imaplib.IMAP4(HOST, PORT)
caps = M.capabilities
for c in ["IMAP4REV1", "IDLE", "UIDPLUS", "NAMESPACE", "QUOTA", "LITERAL+", "CHILDREN", "ID",
          "ENABLE", "MOVE", "SPECIAL-USE", "UNSELECT", "SASL-IR", "CONDSTORE", "AUTH=PLAIN"]:
    assert c in caps, f"capability {c} missing: {caps}"
M.state = "AUTH"  # imaplib would not even send it
try:
    M._simple_command("SELECT", "INBOX")
    raise AssertionError("SELECT before authentication accepted")
except imaplib.IMAP4.error as e:
    assert "log in first" in str(e), e
M.state = "NONAUTH"
err = no(M.login, USER, "wrong password")
assert "AUTHENTICATIONFAILED" in str(err) or "wrong" in str(err), err
ok(M.login(USER, PW), "login")

# --- mailboxes ---------------------------------------------------------------------------
ok(M.create("Work"))
ok(M.create("Work/Projects"))
ok(M.create("&ZeVnLIqe-"))  # 日本語 in modified UTF-7
# Refused with NO (the command parses; the name is what the server cannot use).
typ, data = M._simple_command("CREATE", "bad&name")
assert typ == "NO", ("invalid modified UTF-7 accepted", typ, data)
assert b"modified UTF-7" in data[0] or b"shift" in data[0], data
ok(M.create("Sent"))
lst = b"\n".join(ok(M.list()))
assert b'(\\HasChildren) "/" Work' in lst, lst
assert b'(\\HasNoChildren) "/" Work/Projects' in lst, lst
assert b"&ZeVnLIqe-" in lst and b"\\Sent" in lst, lst
assert b"Work" in b"\n".join(ok(M.list('""', "%")))
assert b"Work/Projects" not in b"\n".join(ok(M.list('""', "%")))
ok(M.rename("Work/Projects", "Work/Done"))
ok(M.subscribe("Work"))
assert any(x.endswith(b' "/" Work') for x in ok(M.lsub())), ok(M.lsub())
ok(M.unsubscribe("Work"))
assert not any(x.endswith(b' "/" Work') for x in ok(M.lsub()) if x), ok(M.lsub())
ok(M.delete("Work/Done"))
no(M.delete, "INBOX")
no(M.select, "Nope")

# --- APPEND and SELECT -------------------------------------------------------------------
r = ok(M.append("INBOX", "(\\Flagged $Work)", imaplib.Time2Internaldate(1_700_000_000), MSG))
m = re.search(rb"APPENDUID (\d+) (\d+)", r[0])
assert m, r
uidvalidity, uid1 = int(m.group(1)), int(m.group(2))
r = ok(M.append("INBOX", None, None, PLAIN))
uid2 = int(re.search(rb"APPENDUID \d+ (\d+)", r[0]).group(1))
assert uid2 == uid1 + 1
typ, data = M.append("Nope", None, None, PLAIN)
assert typ == "NO" and b"TRYCREATE" in data[0], (typ, data)

typ, data = M.select("INBOX")
assert typ == "OK" and int(data[0]) == 2, data
assert str(uidvalidity) in str(M.response("UIDVALIDITY")), M.response("UIDVALIDITY")

# --- FETCH ---------------------------------------------------------------------------------
d = ok(M.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"))
s = d[0].decode() if isinstance(d[0], bytes) else d[0][0].decode()
assert f"UID {uid1}" in s and "\\Flagged" in s and "$Work" in s, s
assert f"RFC822.SIZE {len(MSG)}" in s, s
assert 'INTERNALDATE "14-Nov-2023 22:13:20 +0000"' in s, s
assert '"alice" "example.org"' in s and "<m1@example.org>" in s, s
assert '(NIL NIL "team" NIL)' in s and '(NIL NIL NIL NIL)' in s, s  # group syntax
d = ok(M.fetch("1", "(BODYSTRUCTURE)"))
s = d[0].decode()
assert '"TEXT" "PLAIN"' in s and '"APPLICATION" "PDF"' in s and '"MIXED"' in s, s
assert '"ATTACHMENT"' in s, s
d = ok(M.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.8>)"))
parts = {p[0]: p[1] for p in d if isinstance(p, tuple)}
joined = b"".join(b"".join(p) if isinstance(p, tuple) else p for p in d)
assert b"Hello Bob, the agenda is attached." in joined, d
assert b"Content-Disposition: attachment" in joined, d
assert b"Subject: =?utf-8?q?caf=C3=A9?= meeting\r\n\r\n" in joined, d
assert b'BODY[TEXT]<0> "preamble"' in joined, joined
# PEEK does not set \Seen; BODY[] does.
assert b"\\Seen" not in ok(M.fetch("1", "(FLAGS)"))[0]
d = ok(M.fetch("2", "(BODY[])"))
assert any(isinstance(p, tuple) and p[1] == PLAIN for p in d), d
assert b"\\Seen" in ok(M.fetch("2", "(FLAGS)"))[0]
d = ok(M.uid("FETCH", f"{uid1}:*", "(FLAGS)"))
assert len([x for x in d if x]) == 2, d
no(M.fetch, "99", "(FLAGS)")

# Large messages are stored in chunks; partial fetches and sections read only their range.
att = bytes((i * 7) % 251 for i in range(1_200_000))
import base64 as _b64
enc = _b64.encodebytes(att).replace(b"\n", b"\r\n")
BIG = (b"From: big@example.org\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
       b"--B\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--B\r\n"
       b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       + enc + b"\r\n--B--\r\n")
ok(M.create("Big"))
r = ok(M.append("Big", None, None, BIG))
ok(M.select("Big"))
n = ok(M.search(None, "SUBJECT", "big"))[0].split()[-1].decode()
d = ok(M.fetch(n, "(BODY.PEEK[]<300000.100> BODY.PEEK[2] BODY.PEEK[1] RFC822.SIZE)"))
flat = [p for p in d if isinstance(p, tuple)]
assert flat[0][1] == BIG[300000:300100], flat[0][0]
assert flat[1][1] == enc, (len(flat[1][1]), len(enc))
assert b'BODY[1] "see attachment"' in b"".join(b"".join(p) if isinstance(p, tuple) else p for p in d), d[-1]
d = ok(M.fetch(n, "(BODY.PEEK[])"))
assert d[0][1] == BIG, len(d[0][1])
d = ok(M.fetch(n, f"(BODY.PEEK[]<{len(BIG) - 5}.100>)"))
assert d[0][1] == BIG[-5:], d[0][1]
# Several sections over 1 MiB in one response are streamed from the store one after another.
d = ok(M.fetch(n, "(RFC822.SIZE BODY.PEEK[2] BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[TEXT] UID)"))
flat = [p for p in d if isinstance(p, tuple)]
assert [p[1] for p in flat] == [enc, BIG, BIG[BIG.index(b"\r\n\r\n") + 4:]], [len(p[1]) for p in flat]
assert b'BODY[1] "see attachment"' in flat[2][0], flat[2][0]
assert d[-1].endswith(b")") and b"UID" in d[-1], d[-1]
d = ok(M.fetch(n, "(RFC822.TEXT RFC822)"))
flat = [p for p in d if isinstance(p, tuple)]
assert [p[1] for p in flat] == [BIG[BIG.index(b"\r\n\r\n") + 4:], BIG], [len(p[1]) for p in flat]
ok(M.select("INBOX"))

# --- SEARCH --------------------------------------------------------------------------------
def search(*c):
    return ok(M.search(None, *c))[0].split()

assert search("ALL") == [b"1", b"2"]
assert search("FLAGGED") == [b"1"]
assert search("SEEN") == [b"2"]
assert search("UNSEEN") == [b"1"]
assert search("KEYWORD", "$Work") == [b"1"]
assert search("SUBJECT", "meeting") == [b"1"]
M.literal = "café".encode()
assert ok(M.search("UTF-8", "SUBJECT"))[0].split() == [b"1"]  # decoded encoded-word
assert search("FROM", "alice") == [b"1"]
assert search("TO", "bob@example.org") == [b"1"]
assert search("BODY", "agenda") == [b"1"]
assert search("TEXT", '"line two"') == [b"2"]
assert search("LARGER", "300") == [b"1"]
assert search("OR", "FLAGGED", "SEEN") == [b"1", b"2"]
assert search("NOT", "FLAGGED") == [b"2"]
assert search("SENTSINCE", "1-Nov-2026") == [b"1"]
assert search("HEADER", "Message-ID", "m1@") == [b"1"]
assert search("HEADER", "MIME-Version", '""') == [b"1"]  # empty string: has the field
assert search("HEADER", "X-Nowhere", '""') == []
assert search("FROM", "ALICE", "SUBJECT", "Meeting", "TO", "bob", "BODY", "agenda") == [b"1"]
assert search("FROM", "alice", "SUBJECT", "plain") == []
assert ok(M.uid("SEARCH", "UID", f"{uid2}"))[0].split() == [str(uid2).encode()]

# --- STORE ---------------------------------------------------------------------------------
d = ok(M.store("1", "+FLAGS", "(\\Answered)"))
assert b"\\Answered" in d[0], d
d = ok(M.store("1", "-FLAGS", "(\\Flagged)"))
assert b"\\Flagged" not in d[0], d
d = ok(M.store("1", "+FLAGS.SILENT", "(\\Draft)"))
assert d == [None], d
d = ok(M.store("1", "FLAGS", "(\\Seen $Done)"))
assert b"$Done" in d[0] and b"\\Answered" not in d[0], d
d = ok(M.uid("STORE", str(uid2), "+FLAGS", "(\\Flagged)"))
assert f"UID {uid2}".encode() in d[0], d

# --- COPY / MOVE ---------------------------------------------------------------------------
r = ok(M.copy("1:2", "Work"))
assert re.search(rb"\[COPYUID \d+ \d+:\d+ 1:2\]", r[0]), r
typ, data = M.uid("COPY", f"{uid1}", "Sent")
assert typ == "OK", data
assert ok(M.status("Work", "(MESSAGES)"))[0].endswith(b"(MESSAGES 2)")
ok(M.select("Work"))
typ, data = M._simple_command("MOVE", "1", "Sent")
assert typ == "OK", data
assert ok(M.status("Sent", "(MESSAGES)"))[0].endswith(b"(MESSAGES 2)")
ok(M.select("INBOX"))

# --- STATUS, EXPUNGE, CLOSE, UNSELECT --------------------------------------------------------
st = ok(M.status("INBOX", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"))[0]
assert b"MESSAGES 2" in st and f"UIDVALIDITY {uidvalidity}".encode() in st, st
ok(M.store("2", "+FLAGS", "(\\Deleted)"))
typ, data = M._simple_command("UID", "EXPUNGE", str(uid1))  # not \Deleted: stays
assert typ == "OK", data
assert ok(M.search(None, "ALL"))[0].split() == [b"1", b"2"]
d = ok(M.expunge())
assert d == [b"2"], d
assert ok(M.search(None, "ALL"))[0].split() == [b"1"]
typ, data = M._simple_command("UNSELECT")
assert typ == "OK", data
ok(M.select("INBOX", readonly=True))
no(M.store, "1", "+FLAGS", "(\\Deleted)")  # read-only
ok(M.close())

# --- NAMESPACE, QUOTA, ID, ENABLE CONDSTORE --------------------------------------------------
assert ok(M.namespace())[0] == b'(("" "/")) (("Other Users/" "/")) NIL'
q = ok(M.getquotaroot("INBOX"))
assert b"STORAGE" in b" ".join(x for x in q[1] if x), q
typ, data = M._simple_command("ID", "NIL")
assert typ == "OK" and b"Halyard" in b" ".join(M.untagged_responses.pop("ID", [b""])), data
typ, data = M._simple_command("ENABLE", "CONDSTORE")
assert typ == "OK", data
ok(M.select("INBOX"))
d = ok(M.fetch("1", "(MODSEQ)"))
ms = int(re.search(rb"MODSEQ \((\d+)\)", d[0]).group(1))
typ, data = M._simple_command("STORE", "1", f"(UNCHANGEDSINCE {ms - 1})", "+FLAGS", "(\\Flagged)")
assert typ == "OK" and b"[MODIFIED 1]" in data[0], (typ, data)
typ, data = M._simple_command("STORE", "1", f"(UNCHANGEDSINCE {ms})", "+FLAGS", "(\\Flagged)")
assert typ == "OK", data

# --- AUTHENTICATE PLAIN with SASL-IR, and two sessions seeing each other (IDLE) --------------
A = imaplib.IMAP4(HOST, PORT)
ok(A.authenticate("PLAIN", lambda _: f"\0{USER}\0{PW}".encode()))
ok(A.select("INBOX"))
B = imaplib.IMAP4(HOST, PORT)
ok(B.login(USER, PW))
ok(B.select("INBOX"))

# A idles; B appends and flags; A must hear EXISTS and FETCH without asking.
sock = A.socket()
tag = b"I1"
sock.sendall(tag + b" IDLE\r\n")
f = sock.makefile("rb")
assert f.readline().startswith(b"+"), "IDLE continuation"
ok(B.append("INBOX", None, None, PLAIN))
heard = b""
deadline = time.time() + 10
sock.settimeout(10)
while b"EXISTS" not in heard and time.time() < deadline:
    heard += f.readline()
assert b"* 2 EXISTS" in heard, heard
ok(B.store("1", "+FLAGS", "(\\Answered)"))
while b"FETCH" not in heard and time.time() < deadline:
    heard += f.readline()
assert b"FETCH" in heard and b"\\Answered" in heard, heard
sock.sendall(b"DONE\r\n")
line = f.readline()
while not line.startswith(tag):
    line = f.readline()
assert b"OK" in line, line

# Between commands (no IDLE): B expunges, A sees EXPUNGE at its next NOOP.
ok(B.store("2", "+FLAGS", "(\\Deleted)"))
ok(B.expunge())
B.logout()
M.logout()

# --- the other account sees none of this ----------------------------------------------------
C = imaplib.IMAP4(HOST, PORT)
ok(C.login(USER2, PW2))
names = b" ".join(ok(C.list()))
assert b"Work" not in names and b"INBOX" in names, names
typ, data = C.select("INBOX")
assert typ == "OK" and int(data[0]) == 0, data
C.logout()
print("imap_commands: all passed")

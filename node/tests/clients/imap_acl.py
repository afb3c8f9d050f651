"""Shared folders and RFC 4314 ACLs through Python's imaplib, two users of one group.

Environment: IMAP_PORT, USER, PASSWORD (the owner, alice), USER2, PASSWORD2 (bob), HOST.
Exits non-zero (with the failing assertion) on any deviation.
"""
import imaplib
import os
import re
import socket
import threading
import time

imaplib.Commands.setdefault("LISTRIGHTS", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("MOVE", ("SELECTED",))
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
USER2, PW2 = os.environ["USER2"], os.environ["PASSWORD2"]
OWNER = "alice@example.org"
SHARED = f"Other Users/{OWNER}/Projects"


def q(s):
    return '"' + s + '"'


def ok(r, what=""):
    typ, data = r
    assert typ == "OK", f"{what}: {typ} {data}"
    return data


def refused(r, what=""):
    typ, data = r
    assert typ == "NO", f"{what}: expected NO, got {typ} {data}"
    return b" ".join(d for d in data if isinstance(d, bytes)).decode()


def bad(fn, *a):
    try:
        typ, data = fn(*a)
    except imaplib.IMAP4.error as e:
        return str(e)
    raise AssertionError(f"expected BAD, got {typ} {data}")


def login(user, pw):
    c = imaplib.IMAP4(HOST, PORT)
    ok(c.login(user, pw), "login")
    return c


def names(c, pattern="*"):
    data = ok(c.list('""', pattern), "LIST")
    out = {}
    for line in data:
        if line is None:
            continue
        m = re.match(rb'\((.*?)\) (?:"."|NIL) (.*)$', line)
        assert m, line
        name = m.group(2).decode()
        if name.startswith('"'):
            name = name[1:-1]
        out[name] = m.group(1).decode()
    return out


def msg(subject):
    return (
        f"From: {OWNER}\r\nTo: team@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
    ).encode()


alice = login(USER, PW)
bob = login(USER2, PW2)

caps = ok(alice.capability())[0].decode()
assert "ACL" in caps.split() and "RIGHTS=texk" in caps, caps
ns = ok(alice.namespace())[0].decode()
assert '(("Other Users/" "/"))' in ns, ns

# --- alice's own mailbox: full rights, nobody else sees it ---------------------------------
ok(alice.create("Projects"))
for s in ("plan", "budget"):
    ok(alice.append("Projects", None, None, msg(s)))
assert ok(alice.myrights("Projects"))[0].decode().endswith("lrswipkxteacd")
acl = ok(alice.getacl("Projects"))[0].decode()
assert acl == f"Projects {OWNER} lrswipkxteacd", acl
assert not any(n.startswith("Other Users") for n in names(bob)), names(bob)
refused(bob.select(q(SHARED)), "SELECT before sharing")
refused(bob.getacl(q(SHARED)), "GETACL before sharing")

# --- lookup + read: visible, read-only, \Seen untouched -----------------------------------
ok(alice.setacl("Projects", "bob", "lr"), "SETACL by login")
acl = ok(alice.getacl("Projects"))[0].decode()
assert f"{OWNER} lrswipkxteacd" in acl and "bob@example.org lr" in acl, acl
seen = names(bob)
assert seen.get(SHARED) == "\\HasNoChildren", seen
assert "\\Noselect" in seen["Other Users"] and "\\Noselect" in seen[f"Other Users/{OWNER}"], seen
top = names(bob, q("Other Users/%"))
assert list(top) == [f"Other Users/{OWNER}"] and "\\HasChildren" in top[f"Other Users/{OWNER}"], top
try:
    bob.select(q(SHARED))
    raise AssertionError("SELECT with only l r should open read-only")
except imaplib.IMAP4.readonly:
    # What a client does with [READ-ONLY]: carry on read-only.
    bob.untagged_responses.pop("READ-ONLY", None)
    bob.is_readonly = True
assert bob.response("EXISTS")[1] == [b"2"], bob.untagged_responses
assert ok(bob.myrights(q(SHARED)))[0].decode().endswith(" lr"), bob.myrights(q(SHARED))
body = ok(bob.fetch("1", "(BODY[])"))[0][1]
assert b"body of plan" in body, body
ok(alice.select("Projects"))
flags = ok(alice.fetch("1", "(FLAGS)"))[0].decode()
assert "\\Seen" not in flags, f"bob without 's' set \\Seen: {flags}"
refused(bob.store("1", "+FLAGS", "(\\Flagged)"), "STORE on read-only")
why = refused(bob.append(q(SHARED), None, None, msg("intruder")), "APPEND without i")
assert "NOPERM" in why or "permission" in why, why
refused(bob.getacl(q(SHARED)), "GETACL without a")
refused(bob.setacl(q(SHARED), "bob", "lrswipkxtea"), "SETACL without a")
refused(bob._simple_command("LISTRIGHTS", q(SHARED), "bob"), "LISTRIGHTS without a")
status = ok(bob.status(q(SHARED), "(MESSAGES UIDNEXT)"))[0].decode()
assert "MESSAGES 2" in status, status
ok(bob.subscribe(q(SHARED)))
lsub = ok(bob.lsub('""', "*"))
assert any(SHARED.encode() in l for l in lsub), lsub

# --- insert + seen + write: APPENDUID on alice's mailbox, flags she allowed ---------------
ok(alice.setacl("Projects", "Bob@Example.org", "+isw"), "SETACL by address, any case")
assert "bob@example.org lrswi" in ok(alice.getacl("Projects"))[0].decode()
ok(bob.select(q(SHARED)))
typ, data = bob.append(q(SHARED), "(\\Seen \\Deleted)", None, msg("from bob"))
assert typ == "OK" and b"APPENDUID" in data[0], data
ok(alice.noop())
flags = ok(alice.fetch("3", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
assert b"from bob" in flags[0][1], flags
assert b"\\Seen" in flags[0][0] and b"\\Deleted" not in flags[0][0], flags
ok(bob.noop())
ok(bob.store("1", "+FLAGS", "(\\Seen \\Deleted $Reviewed)"))
f = ok(bob.fetch("1", "(FLAGS)"))[0].decode()
assert "\\Seen" in f and "$Reviewed" in f and "\\Deleted" not in f, f
refused(bob.store("1", "+FLAGS", "(\\Deleted)"), "only \\Deleted without t")
refused(bob.expunge(), "EXPUNGE without e")
refused(bob._simple_command("MOVE", "1", "INBOX"), "MOVE without t/e")
typ, data = bob.copy("1", "INBOX")
assert typ == "OK" and b"COPYUID" in data[0], data
ok(bob.select("INBOX"))
got = ok(bob.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
assert any(b"plan" in p[1] for p in got if isinstance(p, tuple)), got

# --- IDLE on the shared mailbox sees the owner's new mail ---------------------------------
ok(bob.select(q(SHARED)))
tag = bob._new_tag().decode()
bob.send(f"{tag} IDLE\r\n".encode())
assert bob.readline().startswith(b"+"), "IDLE continuation"
ok(alice.append("Projects", None, None, msg("late news")))
bob.sock.settimeout(10)
line = bob.readline()
assert re.match(rb"\* 4 EXISTS", line), line
bob.send(b"DONE\r\n")
while not bob.readline().startswith(tag.encode()):
    pass
bob.sock.settimeout(None)

# --- create below a shared mailbox needs k; delete needs x --------------------------------
sub = f"{SHARED}/Minutes"
refused(bob.create(q(sub)), "CREATE without k")
ok(alice.setacl("Projects", "bob", "+k"))
ok(bob.create(q(sub)))
assert "Projects/Minutes" in names(alice), names(alice)
refused(bob.delete(q(sub)), "DELETE without x")
refused(bob.rename(q(sub), "Mine"), "RENAME across users")
refused(bob.create(q(f"Other Users/{OWNER}/TopLevel")), "top level in someone else's tree")

# --- the owner keeps every right; bad rights and unknown users are refused clearly --------
refused(alice.setacl("Projects", OWNER, '""'), "owner entry")
assert "unknown right" in bad(alice.setacl, "Projects", "bob", "lrz")
assert "no such user" in refused(alice.setacl("Projects", "nobody@example.org", "lr"))
lr = ok(alice._simple_command("LISTRIGHTS", "Projects", "bob"))
lr = alice.response("LISTRIGHTS")[1][0].decode()
assert lr == 'Projects bob "" l r s w i p k x t e a', lr

# --- anyone and negative rights -----------------------------------------------------------
ok(alice.setacl("Projects", "anyone", "lr"))
ok(alice.setacl("Projects", "-bob", "r"))
mine = ok(bob.myrights(q(SHARED)))[0].decode().split()[-1]
assert "r" not in mine and "l" in mine, mine
ok(bob.noop())
refused(bob.fetch("1", "(FLAGS)"), "FETCH after r was withdrawn")
ok(alice.deleteacl("Projects", "-bob"))
ok(alice.deleteacl("Projects", "bob"))
assert ok(bob.myrights(q(SHARED)))[0].decode().split()[-1] == "lr"
ok(alice.deleteacl("Projects", "anyone"))
assert not any(n.startswith("Other Users") for n in names(bob)), names(bob)
refused(bob.status(q(SHARED), "(MESSAGES)"), "STATUS after unsharing")

# --- an ACL command with a synchronising literal, and one before login --------------------
s = socket.create_connection((HOST, PORT), timeout=10)
f = s.makefile("rb")
f.readline()
s.sendall(b"n1 GETACL INBOX\r\n")
assert f.readline().startswith(b"n1 BAD"), "GETACL before login"
s.sendall(f"l1 LOGIN {USER} {PW}\r\n".encode())
while not f.readline().startswith(b"l1 OK"):
    pass
s.sendall(b"g1 GETACL {8}\r\n")
assert f.readline().startswith(b"+"), "continuation for the literal"
s.sendall(b"Projects\r\n")
line = f.readline()
assert line.startswith(b"* ACL Projects alice@example.org"), line
assert f.readline().startswith(b"g1 OK")
s.sendall(b"g2 SETACL Projects bob\r\n")
assert f.readline().startswith(b"g2 BAD"), "missing argument"
s.sendall(b"g3 MYRIGHTS {99999999999}\r\n")
assert f.readline().startswith(b"g3 NO [TOOBIG]"), "oversized literal"
s.sendall(b"g4 NOOP\r\n")
assert f.readline().startswith(b"g4 OK"), "session still usable"
s.close()

for c in (alice, bob):
    c.logout()
print("imap_acl: all checks passed")

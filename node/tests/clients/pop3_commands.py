"""POP3 through Python's poplib (and raw commands where poplib has none)."""
import base64
import imaplib
import os
import poplib
import socket

HOST = os.environ.get("HOST", "127.0.0.1")
IMAP, POP = int(os.environ["IMAP_PORT"]), int(os.environ["POP3_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]

# Put three messages in the INBOX over IMAP (one with a line starting with a dot).
M = imaplib.IMAP4(HOST, IMAP)
M.login(USER, PW)
bodies = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\n.hidden dot\r\nline 2\r\nline 3\r\n",
    b"From: c@example.org\r\nSubject: three\r\n\r\nthird\r\n",
]
for b in bodies:
    assert M.append("INBOX", None, None, b)[0] == "OK"
M.logout()

P = poplib.POP3(HOST, POP)
assert P.getwelcome().startswith(b"+OK")
caps = P.capa()
for c in ["TOP", "UIDL", "USER", "SASL", "RESP-CODES"]:
    assert c in caps, caps
try:
    P.stat()
    raise AssertionError("STAT before login")
except poplib.error_proto as e:
    assert b"log in first" in e.args[0], e
try:
    P.user(USER)
    P.pass_("wrong")
    raise AssertionError("wrong password accepted")
except poplib.error_proto as e:
    assert b"[AUTH]" in e.args[0], e
P.user(USER)
assert P.pass_(PW).startswith(b"+OK")
count, size = P.stat()
assert count == 3 and size == sum(len(b) for b in bodies), (count, size)
resp, listing, _ = P.list()
assert [int(x.split()[1]) for x in listing] == [len(b) for b in bodies], listing
resp, uidl, _ = P.uidl()
uids = [x.split()[1] for x in uidl]
assert len(set(uids)) == 3 and all(b"." in u for u in uids), uids
resp, lines, octets = P.retr(2)
assert b"\r\n".join(lines) + b"\r\n" == bodies[1], lines  # dot-unstuffed by poplib
resp, lines, _ = P.top(2, 1)
assert lines[-1] == b".hidden dot" and b"line 2" not in lines, lines
assert P.uidl(3).split()[2] == uids[2]

# The maildrop is locked: a second session is refused.
Q = poplib.POP3(HOST, POP)
Q.user(USER)
try:
    Q.pass_(PW)
    raise AssertionError("second session got the maildrop")
except poplib.error_proto as e:
    assert b"IN-USE" in e.args[0], e
Q.quit()

# DELE, RSET, DELE again; nothing is deleted until QUIT.
P.dele(1)
try:
    P.retr(1)
    raise AssertionError("RETR of a deleted message")
except poplib.error_proto:
    pass
P.rset()
P.dele(1)
P.dele(3)
M = imaplib.IMAP4(HOST, IMAP)
M.login(USER, PW)
assert M.select("INBOX")[1][0] == b"3"  # not yet
assert P.quit().startswith(b"+OK")
M.noop()
assert M.select("INBOX")[1][0] == b"1"
M.logout()

# A session that ends without QUIT deletes nothing.
P = poplib.POP3(HOST, POP)
P.user(USER)
P.pass_(PW)
P.dele(1)
P.file.close()
P.sock.close()

# AUTH PLAIN (RFC 5034), UIDL unchanged across sessions.
s = socket.create_connection((HOST, POP))
f = s.makefile("rb")
assert f.readline().startswith(b"+OK")
token = base64.b64encode(f"\0{USER}\0{PW}".encode())
import time
deadline = time.time() + 10
while True:
    s.sendall(b"AUTH PLAIN " + token + b"\r\n")
    line = f.readline()
    if line.startswith(b"+OK") or time.time() > deadline:
        break
    assert b"IN-USE" in line, line  # the dropped session's lock is released at once
    time.sleep(0.2)
assert line.startswith(b"+OK"), line
s.sendall(b"UIDL\r\n")
got = []
line = f.readline()
assert line.startswith(b"+OK"), line
while True:
    line = f.readline()
    if line == b".\r\n":
        break
    got.append(line.split()[1])
assert got == [uids[1]], (got, uids)
s.sendall(b"APOP x y\r\n")
assert f.readline().startswith(b"-ERR")
s.sendall(b"QUIT\r\n")
assert f.readline().startswith(b"+OK")
print("pop3_commands: all passed")

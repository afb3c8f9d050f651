"""Hostile IMAP input: each gets a clear NO/BAD/BYE, and a well-behaved session running at the
same time is unaffected."""
import imaplib
import os
import socket
import time

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]

good = imaplib.IMAP4(HOST, PORT)
good.login(USER, PW)
good.select("INBOX")


def still_fine():
    assert good.noop()[0] == "OK"
    assert good.append("INBOX", None, None, b"Subject: ok\r\n\r\nfine\r\n")[0] == "OK"


def conn():
    s = socket.create_connection((HOST, PORT))
    s.settimeout(10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"* OK")
    return s, f


def login(s, f):
    s.sendall(f"a LOGIN {USER} {PW}\r\n".encode())
    line = f.readline()
    assert line.startswith(b"a OK"), line


# 1. A 2 GiB literal announced: refused at once, nothing allocated, the session goes on.
s, f = conn()
login(s, f)
s.sendall(b"b APPEND INBOX {2147483648}\r\n")
line = f.readline()
assert line.startswith(b"b NO [TOOBIG]"), line
s.sendall(b"c NOOP\r\n")
assert f.readline().startswith(b"c OK")
# Non-synchronising: the server cannot refuse the bytes, so it hangs up.
s.sendall(b"d APPEND INBOX {2147483648+}\r\n")
line = f.readline()
assert line.startswith(b"* BYE"), line
s.close()
still_fine()

# 2. A 1 MiB command line. Invalid from its start: BAD, the line is skipped, the session
# goes on. Valid so far but over the line limit: BYE.
s, f = conn()
s.sendall(b"e NOOP " + b"x" * (1 << 20) + b"\r\nf NOOP\r\n")
line = f.readline()
assert line.startswith(b"e BAD"), line
line = f.readline()
assert line.startswith(b"f OK"), line
login(s, f)
s.sendall(b'g SEARCH SUBJECT "' + b"x" * (1 << 20) + b'"\r\n')
line = f.readline()
assert line.startswith(b"* BYE") and b"longer" in line, line
s.close()
still_fine()

# 3. Garbage and commands before authentication.
s, f = conn()
s.sendall(b"\x00\x01\x02 garbage\r\n")
line = f.readline()
assert line.startswith(b"* BAD"), line
s.sendall(b"ok1 NOOP\r\n")
assert f.readline().startswith(b"ok1 OK")
s.close()
s, f = conn()
s.sendall(b"f SELECT INBOX\r\n")
assert f.readline().startswith(b"f BAD"), "SELECT before login"
s.sendall(b"g FETCH 1 (FLAGS)\r\n")
assert f.readline().startswith(b"g BAD")
s.sendall(b"h CREATE &Jjo!-\r\n")
assert f.readline().startswith(b"h BAD")
login(s, f)
s.sendall(b"i CREATE &Jjo!-\r\n")
line = f.readline()
# The command parses; the name is refused (NO, not BAD: issue 21 item 7).
assert line.startswith(b"i NO [CANNOT]"), line
s.close()

# 4. 100,000 pipelined NOOPs: every one answered, in order.
s, f = conn()
login(s, f)
N = 100_000
payload = b"".join(b"n%d NOOP\r\n" % i for i in range(N))
import threading
t = threading.Thread(target=s.sendall, args=(payload,))
t.start()
seen = 0
while seen < N:
    line = f.readline()
    assert line, "connection closed during NOOP flood"
    if line.startswith(b"n"):
        assert line.startswith(b"n%d OK" % seen), (seen, line)
        seen += 1
t.join()
s.close()
still_fine()

# 5. A client that never reads: asks for a lot of output, never reads it. The server drops it
# after its write timeout; meanwhile the good session works.
s, f = conn()
login(s, f)
s.sendall(b"j SELECT INBOX\r\n")
big = b"k FETCH 1:* (BODY.PEEK[])\r\n" * 2000
s.settimeout(30)
try:
    s.sendall(big)
except OSError:
    pass
t0 = time.time()
still_fine()
assert time.time() - t0 < 10, "good session slowed down by a stuck one"
# The stuck connection is closed by the server eventually (write timeout).
s.setblocking(True)
s.settimeout(60)
closed = False
deadline = time.time() + 60
try:
    while time.time() < deadline:
        chunk = s.recv(1 << 20)
        if not chunk:
            closed = True
            break
except (ConnectionResetError, OSError):
    closed = True
assert closed, "server never gave up on a client that does not read"
still_fine()
# 6. Password guessing: failures are answered ever more slowly, then refused outright (for
# the address and the login), while the real user on another connection is unaffected.
MAXF = int(os.environ.get("MAX_LOGIN_FAILURES", "4"))
s, f = conn()
t0 = time.time()
for i in range(MAXF):
    s.sendall(f"p{i} LOGIN {USER} wrong{i}\r\n".encode())
    line = f.readline()
    assert line.startswith(f"p{i} NO".encode()) and b"AUTHENTICATIONFAILED" in line, line
assert time.time() - t0 >= 1.0, "failures were not slowed down"
s.sendall(f"q LOGIN {USER} {PW}\r\n".encode())
line = f.readline()
assert line.startswith(b"q NO") and b"too many failed logins" in line, line
s.close()
still_fine()
print("imap_hostile: all passed")

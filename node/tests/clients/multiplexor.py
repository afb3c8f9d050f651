"""The multiplexor: sessions on a node that is not the master are relayed to the master; when
the master changes (the old master paused past an election, then resumed), its sessions end
with * BYE and clients reconnect and find their mail.
Environment: PORTS (comma-separated IMAP ports by node id), POP_PORTS, LEADER, LEADER_PID,
USER, PASSWORD."""
import imaplib
import os
import poplib
import re
import signal
import socket
import time

HOST = "127.0.0.1"
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
ports = [int(p) for p in os.environ["PORTS"].split(",")]
pops = [int(p) for p in os.environ["POP_PORTS"].split(",")]
leader = int(os.environ["LEADER"])
follower = next(i for i in range(1, len(ports) + 1) if i != leader)

direct = imaplib.IMAP4(HOST, ports[leader - 1])
assert direct.login(USER, PW)[0] == "OK"
direct.select("INBOX")

via = imaplib.IMAP4(HOST, ports[follower - 1])
typ, data = via.login(USER, PW)
assert typ == "OK" and f"via node {follower}".encode() in data[0], data
typ, data = via.append("INBOX", None, None, b"Subject: relayed\r\n\r\nthrough the multiplexor\r\n")
assert typ == "OK", data
uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1)
typ, data = via.select("INBOX")
assert typ == "OK" and int(data[0]) >= 1, data
assert via.uid("FETCH", uid, "(BODY.PEEK[TEXT])")[1][0][1] == b"through the multiplexor\r\n"
# The direct session on the master hears about it.
direct.noop()
assert int(direct.response("EXISTS")[1][-1]) >= 1, direct.response("EXISTS")

# COMPRESS=DEFLATE (RFC 4978) through the relay: negotiated with the master end to end.
import zlib

raw = socket.create_connection((HOST, ports[follower - 1]), timeout=15)
rf = raw.makefile("rb")
assert rf.readline().startswith(b"* OK")
raw.sendall(f"c1 LOGIN {USER} {PW}\r\nc2 COMPRESS DEFLATE\r\n".encode())
while not rf.readline().startswith(b"c1 OK"):
    pass
line = rf.readline()
assert line.startswith(b"c2 OK"), line
out = zlib.compressobj(wbits=-15)
inf = zlib.decompressobj(wbits=-15)


def zsend(text):
    raw.sendall(out.compress(text.encode()) + out.flush(zlib.Z_SYNC_FLUSH))


def zread_until(tag):
    got = b""
    deadline = time.time() + 15
    while not re.search(rb"(^|\r\n)" + tag + rb" (OK|NO|BAD)[^\r]*\r\n", got):
        assert time.time() < deadline, got
        chunk = raw.recv(65536)
        assert chunk, got
        got += inf.decompress(chunk)
    return got


zsend(f"c3 SELECT INBOX\r\nc4 UID FETCH {uid.decode()} (BODY.PEEK[TEXT])\r\n")
got = zread_until(b"c4")
assert b"c3 OK" in got and b"through the multiplexor" in got, got
zsend("c5 COMPRESS DEFLATE\r\n")  # a second time: NO [COMPRESSIONACTIVE]
got = zread_until(b"c5")
assert b"c5 NO [COMPRESSIONACTIVE]" in got, got
zsend("c6 LOGOUT\r\n")
got = zread_until(b"c6")
assert b"* BYE" in got, got
raw.close()

P = poplib.POP3(HOST, pops[follower - 1])
P.user(USER)
r = P.pass_(PW)
assert b"via node" in r, r
assert P.stat()[0] >= 1
P.quit()

# The master changes: pause it past an election, let it come back as a follower.
pid = int(os.environ["LEADER_PID"])
os.kill(pid, signal.SIGSTOP)
time.sleep(2.5)
os.kill(pid, signal.SIGCONT)


def wait_bye(m, what):
    s = m.socket()
    s.settimeout(15)
    got = b""
    deadline = time.time() + 15
    while b"BYE" not in got and time.time() < deadline:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    assert b"* BYE" in got and b"moved" in got, (what, got)


wait_bye(direct, "session on the old master")
wait_bye(via, "relayed session")

# Reconnect anywhere: the message is there with the same UID.
for port in ports:
    deadline = time.time() + 20
    while True:
        try:
            m = imaplib.IMAP4(HOST, port)
            typ, _ = m.login(USER, PW)
            if typ == "OK":
                break
        except (imaplib.IMAP4.error, OSError) as e:
            last = e
        assert time.time() < deadline, last
        time.sleep(0.3)
    # Right after the election a SELECT may still meet the change of master: a temporary
    # NO [UNAVAILABLE], which a client retries.
    deadline = time.time() + 20
    while True:
        typ, data = m.select("INBOX")
        if typ == "OK":
            break
        assert b"UNAVAILABLE" in data[0] and time.time() < deadline, (port, typ, data)
        time.sleep(0.3)
    typ, data = m.uid("FETCH", uid, "(BODY.PEEK[TEXT])")
    assert typ == "OK" and data[0] and data[0][1] == b"through the multiplexor\r\n", (port, data)
    m.logout()
print("multiplexor ok")

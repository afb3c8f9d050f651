"""Hostile SMTP clients get clear answers, bounded resources, and hurt nobody else.

Environment: SMTP_PORT, IMAP_PORT, USER, PASSWORD (alice), COMMAND_TIMEOUT (seconds).
"""
import imaplib
import os
import socket
import time

HOST = "127.0.0.1"
PORT = int(os.environ["SMTP_PORT"])
TIMEOUT = int(os.environ["COMMAND_TIMEOUT"])


class Raw:
    def __init__(self):
        self.s = socket.create_connection((HOST, PORT), timeout=30)
        self.f = self.s.makefile("rb")
        assert self.reply()[0] == 220

    def send(self, b):
        self.s.sendall(b)

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                return None, lines
            lines.append(line.decode(errors="replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def closed(self):
        try:
            return self.f.readline() == b""
        except OSError:
            return True


def good_message(c, subject):
    c.send(b"MAIL FROM:<g@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(f"Subject: {subject}\r\n\r\nfine\r\n.\r\n".encode())
    code, lines = c.reply()
    assert code == 250, lines


# A well-behaved session stays open through everything below, never idle for long.
import threading
good = Raw()
good.send(b"EHLO good.example\r\n")
assert good.reply()[0] == 250
good_lock = threading.Lock()
good_failures = []
stop = threading.Event()


def keepalive():
    while not stop.wait(1.0):
        with good_lock:
            good.send(b"NOOP\r\n")
            code, lines = good.reply()
            if code != 250:
                good_failures.append(lines)


ka = threading.Thread(target=keepalive)
ka.start()

# 10 MB command line: 500, memory bounded (dropped as it arrives), session usable after.
c = Raw()
c.send(b"EHLO h.example\r\n")
assert c.reply()[0] == 250
chunk = b"A" * (1 << 20)
for _ in range(10):
    c.send(chunk)
c.send(b"\r\nNOOP\r\n")
code, lines = c.reply()
assert code == 500 and "too long" in lines[0], lines
assert c.reply()[0] == 250

# Bare LF ends a command line (lenient), a bare CR does not.
c.send(b"NOOP\n")
assert c.reply()[0] == 250
c.send(b"NOOP\rRSET\r\n")
code, _ = c.reply()
assert code in (250, 500, 501), code

# SMTP smuggling: "<LF>.<LF>" inside DATA does not end the message; the smuggled
# commands are message text, so exactly one 250 comes back.
c.send(b"MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
c.send(b"Subject: smuggle\r\n\r\nbefore\n.\nMAIL FROM:<evil@remote.example>\nRCPT TO:<alice@example.org>\nDATA\nSubject: injected\n\nx\n.\n")
c.send(b"after\r\n.\r\nNOOP\r\n")
code, lines = c.reply()
assert code == 250 and "queued" in lines[0], lines
assert c.reply()[0] == 250, "NOOP after the message"

# NUL bytes in a command.
c.send(b"HELO a\x00b\r\n")
assert c.reply()[0] == 500

# BDAT announcing 5 GB: refused, connection closed (we do not read gigabytes to stay in step).
c.send(b"MAIL FROM:<b@remote.example>\r\nRCPT TO:<alice@example.org>\r\n")
assert [c.reply()[0] for _ in range(2)] == [250, 250]
c.send(b"BDAT 5000000000 LAST\r\n")
code, lines = c.reply()
assert code == 552, lines
assert c.closed(), "connection left open after an impossible BDAT"

# Pipelined junk: errors counted, 421 and close after the limit.
c = Raw()
c.send(b"".join(b"XYZZY %d\r\n" % i for i in range(200)))
codes = []
while True:
    code, _ = c.reply()
    if code is None:
        break
    codes.append(code)
assert codes[-1] == 421 and set(codes[:-1]) == {500} and len(codes) < 200, codes[-3:]

# Slowloris: a command line trickled a byte at a time is cut off after COMMAND_TIMEOUT.
c = Raw()
start = time.time()
closed = False
for b in b"EHLO slow.example.and.so.on.and.so.forth":
    try:
        c.send(bytes([b]))
    except OSError:
        closed = True
        break
    time.sleep(0.5)
    if time.time() - start > TIMEOUT + 5:
        break
code, lines = c.reply()
elapsed = time.time() - start
assert (code == 421 or closed or code is None) and elapsed < TIMEOUT + 5, (code, lines, elapsed)

# The good session never noticed.
stop.set()
ka.join()
assert not good_failures, good_failures
good.send(b"NOOP\r\n")
assert good.reply()[0] == 250
good_message(good, "still fine")

M = imaplib.IMAP4(HOST, int(os.environ["IMAP_PORT"]))
M.login(os.environ["USER"], os.environ["PASSWORD"])
for _ in range(50):
    n = int(M.select("INBOX")[1][0])
    subs = []
    if n:
        for p in M.fetch("1:*", "(BODY.PEEK[])")[1]:
            if isinstance(p, tuple):
                subs.append(p[1])
    if len(subs) >= 2:
        break
    time.sleep(0.2)
smug = [m for m in subs if b"Subject: smuggle" in m]
assert len(smug) == 1 and b"Subject: injected" in smug[0] and b"after" in smug[0], subs
assert not any(m.startswith(b"Received") and b"Subject: injected\r\n\r\nx" in m.split(b"\r\n\r\n", 1)[0] for m in subs)
assert len(subs) == 2, [m[:200] for m in subs]
# Connection rate per address: beyond the limit, 421 at once.
refused = 0
for _ in range(int(os.environ["RATE"]) + 5):
    r = Raw.__new__(Raw)
    r.s = socket.create_connection((HOST, PORT), timeout=10)
    r.f = r.s.makefile("rb")
    code, lines = r.reply()
    if code == 421:
        assert "slow down" in lines[0], lines
        refused += 1
    r.s.close()
assert refused >= 5, refused
print("smtp_hostile: all checks passed")

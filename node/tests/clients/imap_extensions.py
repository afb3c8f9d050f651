"""MULTIAPPEND (RFC 3502) and COMPRESS=DEFLATE (RFC 4978) over a raw socket against a running
Halyard, with the exact answers.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
"""
import os
import re
import socket
import time
import zlib

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]


class Raw:
    def __init__(self):
        self.s = socket.create_connection((HOST, PORT), timeout=20)
        self.buf = b""
        self.n = 0
        self.out = None
        self.inf = None
        assert self.line().startswith(b"* OK")

    def send(self, data):
        if self.out:
            data = self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, self.buf
            self.buf += self.inf.decompress(chunk) if self.inf else chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def cmd(self, text, raw=None):
        self.n += 1
        tag = f"x{self.n}".encode()
        self.send(tag + b" " + (raw if raw is not None else text.encode()) + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def ok(self, text, raw=None):
        lines, done = self.cmd(text, raw)
        assert done.split()[1] == b"OK", f"{text}: {done} {lines}"
        return lines, done


def msg(n):
    return f"From: a@example.org\r\nSubject: multi {n}\r\n\r\nbody {n}\r\n".encode()


A = Raw()
A.ok(f"LOGIN {USER} {PW}")
caps = A.ok("CAPABILITY")[0][0]
assert b" MULTIAPPEND" in caps and b" COMPRESS=DEFLATE" in caps, caps
A.ok("CREATE multi")

# --- MULTIAPPEND: three messages (flags, a date, a literal8) in one command, one APPENDUID
parts = [(b"(\\Seen) ", msg(1)), (b'"01-Jan-2024 10:00:00 +0000" ', msg(2)), (b"", msg(3))]
raw = b"APPEND multi"
for prefix, body in parts:
    raw += b" " + prefix + b"{%d+}\r\n" % len(body) + body
_, done = A.ok("APPEND", raw)
m = re.match(rb"x\d+ OK \[APPENDUID (\d+) (\d+),(\d+),(\d+)\]", done)
assert m, done
uids = [int(m.group(i)) for i in (2, 3, 4)]
assert uids == list(range(uids[0], uids[0] + 3)), uids
lines, _ = A.ok("STATUS multi (MESSAGES)")
assert b"MESSAGES 3" in lines[0], lines
# Synchronising literals: a continuation for each.
A.n += 1
A.send(b"x%d APPEND multi {%d}\r\n" % (A.n, len(msg(4))))
assert A.line().startswith(b"+ "), "continuation for the first message"
A.send(msg(4) + b" {%d}\r\n" % len(msg(5)))
assert A.line().startswith(b"+ "), "continuation for the second message"
A.send(msg(5) + b"\r\n")
done = A.line()
assert re.match(rb"x\d+ OK \[APPENDUID \d+ \d+,\d+\]", done), done
# All or nothing: a message the server refuses (a literal8 with a NUL) fails the whole
# command and stores none of them.
raw = b"APPEND multi {%d+}\r\n%s ~{3+}\r\na\x00b" % (len(msg(6)), msg(6))
lines, done = A.cmd("APPEND", raw)
assert done.split()[1] == b"NO", (lines, done)
lines, _ = A.ok("STATUS multi (MESSAGES)")
assert b"MESSAGES 5" in lines[0], lines
# Into a mailbox that does not exist: NO [TRYCREATE], nothing stored anywhere.
raw = b"APPEND nosuch {%d+}\r\n%s {%d+}\r\n%s" % (len(msg(7)), msg(7), len(msg(8)), msg(8))
lines, done = A.cmd("APPEND", raw)
assert done.split()[1] == b"NO" and b"TRYCREATE" in done, (lines, done)

# --- COMPRESS=DEFLATE: everything after the OK is DEFLATE both ways ---------------------
_, done = A.ok("COMPRESS DEFLATE")
assert b"DEFLATE active" in done, done
A.out = zlib.compressobj(wbits=-15)
A.inf = zlib.decompressobj(wbits=-15)
assert A.buf == b""
lines, _ = A.ok("SELECT multi")
assert b"* 5 EXISTS\r\n" in lines, lines
lines, _ = A.ok("FETCH 1:5 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
assert sum(1 for l in lines if l.startswith(b"Subject: multi")) == 5, lines
lines, done = A.cmd("COMPRESS DEFLATE")
assert done.split()[1] == b"NO" and b"[COMPRESSIONACTIVE]" in done, done
# A large message both ways through the compressed stream.
big = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 20_000
A.ok("APPEND", b"APPEND multi {%d+}\r\n" % len(big) + big)
lines, _ = A.ok("FETCH 6 (BODY.PEEK[])")
assert lines[0].endswith(b"{%d}\r\n" % len(big)), lines[0]
A.ok("UNSELECT")
A.ok("DELETE multi")
lines, done = A.cmd("LOGOUT")
assert any(l.startswith(b"* BYE") for l in lines) and done.split()[1] == b"OK", (lines, done)
print("imap_extensions: all scenarios passed")

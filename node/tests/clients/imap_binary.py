"""RFC 3516 BINARY, exact answers over a raw socket against a running Halyard: FETCH
BINARY[part], BINARY.PEEK with a partial range and BINARY.SIZE of a base64 attachment that
holds NUL octets (a ~{n} literal8, read here by its length) and of a quoted-printable text;
NO [UNKNOWN-CTE] for an encoding the server cannot decode; APPEND with a literal8.

Environment: IMAP_PORT, USER, PASSWORD, HOST.
Exits non-zero (with the failing assertion) on any deviation.
"""
import base64
import os
import re
import socket

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]


class Raw:
    """One IMAP session on a socket; literals ({n} and ~{n}) are read by their length."""

    def __init__(self):
        self.s = socket.create_connection((HOST, PORT), timeout=20)
        self.f = self.s.makefile("rb")
        self.n = 0
        assert self.f.readline().startswith(b"* OK")

    def reply(self):
        """One response: its text without the literals' data, and the literals by where
        they start in that text, as (is_literal8, data)."""
        text, lits = b"", {}
        while True:
            line = self.f.readline()
            assert line, f"connection closed after {text!r}"
            text += line
            m = re.search(rb"(~?)\{(\d+)\}\r\n$", line)
            if not m:
                return text, lits
            n = int(m.group(2))
            data = self.f.read(n)
            assert len(data) == n, f"connection closed in a literal after {text!r}"
            lits[len(text)] = (m.group(1) == b"~", data)

    def cmd(self, text, literal=None, literal8=False, nonsync=False):
        """Sends a command, `literal` (if any) appended as its last argument; returns the
        untagged responses and the tagged line."""
        self.n += 1
        tag = b"b%d" % self.n
        line = tag + b" " + text.encode()
        if literal is not None:
            line += b" %s{%d%s}" % (b"~" if literal8 else b"", len(literal), b"+" if nonsync else b"")
        if literal is not None and nonsync:
            self.s.sendall(line + b"\r\n" + literal + b"\r\n")
        elif literal is not None:
            self.s.sendall(line + b"\r\n")
            first = self.reply()
            if not first[0].startswith(b"+"):
                assert first[0].startswith(tag + b" "), first
                return [], first[0]
            self.s.sendall(literal + b"\r\n")
        else:
            self.s.sendall(line + b"\r\n")
        out = []
        while True:
            r = self.reply()
            if r[0].startswith(tag + b" "):
                return out, r[0]
            out.append(r)

    def ok(self, text, **kw):
        out, done = self.cmd(text, **kw)
        assert done.split()[1] == b"OK", (text, done, out)
        return out, done


def fetch(s, items, seq="1"):
    """The one FETCH response to FETCH seq (items)."""
    out, _ = s.ok(f"FETCH {seq} ({items})")
    found = [r for r in out if re.match(rb"\* \d+ FETCH ", r[0])]
    assert len(found) == 1, (items, out)
    return found[0]


def item(resp, name):
    """The value of the item `name` in a FETCH response: (is_literal8, bytes) for a string,
    (None, token) for a number or atom."""
    text, lits = resp
    at = text.index(name + b" ") + len(name) + 1
    rest = text[at:]
    if rest.startswith(b'"'):
        m = re.match(rb'"((?:[^"\\]|\\.)*)"', rest)
        return False, re.sub(rb"\\(.)", rb"\1", m.group(1))
    m = re.match(rb"~?\{\d+\}\r\n", rest)
    if m:
        return lits[at + m.end()]
    return None, re.match(rb"[^ )\r]+", rest).group(0)


def flags_of(s, seq="1"):
    text, _ = fetch(s, "FLAGS", seq)
    return re.search(rb"FLAGS \(([^)]*)\)", text).group(1).split()


# Every octet, and NULs in a row at the end: what base64 carries and no IMAP string can.
PAYLOAD = bytes(range(256)) + b"\x00\x00end\r\n\x00"
B64 = base64.encodebytes(PAYLOAD).replace(b"\n", b"\r\n")  # 76-column lines
# Hex escapes in both cases, a soft line break, a malformed escape kept as it is, white
# space a transport added at a line's end (dropped).
QP = b"Gr=C3=BC=C3=9Fe =3D caf=c3=a9, a soft=\r\n break, a bad =ZZ escape  \r\nlast line"
TEXT = "Grüße = café, a soft break, a bad =ZZ escape\r\nlast line".encode()
UUE = b"begin 644 x\r\n`\r\nend"
MSG = (
    b"From: a@example.org\r\nTo: b@example.org\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=b1nary\r\n\r\n"
    b"--b1nary\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + QP + b"\r\n"
    b"--b1nary\r\nContent-Type: application/octet-stream; name=blob.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + B64 +
    b"--b1nary\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n\r\n" + UUE + b"\r\n"
    b"--b1nary--\r\n"
)

s = Raw()
s.ok(f"LOGIN {USER} {PW}")
out, _ = s.ok("CAPABILITY")
caps = [r[0] for r in out if r[0].startswith(b"* CAPABILITY ")]
assert len(caps) == 1 and b"BINARY" in caps[0].split(), out
s.ok("CREATE binary-test")
s.ok("APPEND binary-test", literal=MSG)
s.ok("SELECT binary-test")

# --- BINARY of a base64 part with NULs: a literal8 of the decoded octets ------------------
r = fetch(s, "BINARY.PEEK[2] BINARY.SIZE[2]")
assert r[0].startswith(b"* 1 FETCH (BINARY[2] ~{%d}\r\n" % len(PAYLOAD)), r
assert item(r, b"BINARY[2]") == (True, PAYLOAD), r
assert item(r, b"BINARY.SIZE[2]") == (None, b"%d" % len(PAYLOAD)), r

# --- a quoted-printable text: a string (no NUL), soft breaks joined, =XX decoded -----------
r = fetch(s, "BINARY.PEEK[1] BINARY.SIZE[1]")
assert item(r, b"BINARY[1]") == (False, TEXT), r
assert item(r, b"BINARY.SIZE[1]") == (None, b"%d" % len(TEXT)), r

# --- partial ranges are of the decoded content; the answer is BINARY[n], no origin ---------
r = fetch(s, "BINARY.PEEK[2]<0.4>")
assert r[0] == b"* 1 FETCH (BINARY[2] ~{4}\r\n)\r\n", r
assert item(r, b"BINARY[2]") == (True, b"\x00\x01\x02\x03"), r
r = fetch(s, "BINARY.PEEK[2]<250.100>")
assert item(r, b"BINARY[2]") == (True, PAYLOAD[250:350]), r
r = fetch(s, "BINARY.PEEK[2]<4.3>")
assert item(r, b"BINARY[2]") == (False, b"\x04\x05\x06"), r
r = fetch(s, "BINARY.PEEK[1]<0.4>")
assert item(r, b"BINARY[1]") == (False, TEXT[:4]), r
r = fetch(s, "BINARY.PEEK[1]<1000.5>")
assert item(r, b"BINARY[1]") == (False, b""), r

# --- the whole message, and a part that does not exist --------------------------------------
r = fetch(s, "BINARY.PEEK[] BINARY.SIZE[]")
assert item(r, b"BINARY[]") == (False, MSG), r
assert item(r, b"BINARY.SIZE[]") == (None, b"%d" % len(MSG)), r
r = fetch(s, "BINARY.PEEK[9] BINARY.SIZE[9]")
assert item(r, b"BINARY[9]") == (False, b"") and item(r, b"BINARY.SIZE[9]") == (None, b"0"), r

# --- an encoding the server cannot decode: the whole command is NO [UNKNOWN-CTE] ----------
for items in ["BINARY[3]", "BINARY.PEEK[3]", "BINARY.SIZE[3]", "BINARY.PEEK[1] BINARY[3]"]:
    out, done = s.cmd(f"FETCH 1 ({items})")
    assert done.split()[1:3] == [b"NO", b"[UNKNOWN-CTE]"], (items, done, out)
    assert not any(b" FETCH " in r[0] for r in out), (items, out)
# Nothing was sent, so nothing was read: \Seen is not set. BODY[3] is the stored text.
assert b"\\Seen" not in flags_of(s)
r = fetch(s, "BODY.PEEK[3]")
assert item(r, b"BODY[3]") == (False, UUE), r

# --- BINARY.PEEK leaves \Seen alone; BINARY sets it, as BODY[] does -------------------------
assert b"\\Seen" not in flags_of(s)
r = fetch(s, "BINARY[1]")
assert item(r, b"BINARY[1]") == (False, TEXT), r
assert re.search(rb"FLAGS \([^)]*\\Seen", r[0]), r
assert b"\\Seen" in flags_of(s)

# --- APPEND with a literal8: stored as given --------------------------------------------
BODY8 = b"\xff\xfe\x80 raw \x01\x7f octets\r\n"
MSG8 = (
    b"From: a@example.org\r\nSubject: eight bit\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n" + BODY8
)
_, done = s.ok("APPEND binary-test", literal=MSG8, literal8=True)
assert b"[APPENDUID " in done, done
_, done = s.ok("APPEND binary-test", literal=MSG8, literal8=True, nonsync=True)
assert b"[APPENDUID " in done, done
s.ok("NOOP")
for seq in ["2", "3"]:
    r = fetch(s, "BODY.PEEK[] BINARY.PEEK[1] BINARY.SIZE[1]", seq)
    assert item(r, b"BODY[]") == (False, MSG8), r
    assert item(r, b"BINARY[1]") == (False, BODY8), r
    assert item(r, b"BINARY.SIZE[1]") == (None, b"%d" % len(BODY8)), r

# A literal8 with NUL octets: BODY[] could not carry them, so it is refused as RFC 3516
# §4.4 says for a mailbox that cannot store binary content. The session goes on.
out, done = s.cmd("APPEND binary-test", literal=b"Subject: nul\r\n\r\na\x00b\r\n", literal8=True)
assert done.split()[1:3] == [b"NO", b"[UNKNOWN-CTE]"], (done, out)
out, done = s.cmd(
    "APPEND binary-test", literal=b"Subject: nul\r\n\r\n\x00\r\n", literal8=True, nonsync=True
)
assert done.split()[1:3] == [b"NO", b"[UNKNOWN-CTE]"], (done, out)
out, _ = s.ok("SEARCH ALL")
assert [r[0] for r in out if r[0].startswith(b"* SEARCH")] == [b"* SEARCH 1 2 3\r\n"], out

s.ok("CLOSE")
s.ok("DELETE binary-test")
out, done = s.cmd("LOGOUT")
assert any(r[0].startswith(b"* BYE") for r in out) and done.split()[1] == b"OK", (out, done)
print("imap_binary: all scenarios passed")

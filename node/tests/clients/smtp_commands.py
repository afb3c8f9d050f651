"""SMTP reception through Python's smtplib, raw sockets and swaks, read back over IMAP.

Environment: SMTP_PORT, SUBMISSION_PORT, IMAP_PORT, USER, PASSWORD (alice@example.org),
MAX_RCPTS (the server's max_recipients), HOST. The client address is not trusted for relay.
Exits non-zero (with the failing assertion) on any deviation.
"""
import imaplib
import os
import smtplib
import socket
import subprocess
import time

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["SMTP_PORT"])
SUBMISSION = int(os.environ["SUBMISSION_PORT"])
IMAP = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
MAX_RCPTS = int(os.environ["MAX_RCPTS"])
RCPT = "alice@example.org"


def msg(subject, extra=b""):
    return (
        f"From: sender@remote.example\r\nTo: {RCPT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@remote.example>\r\n\r\n"
    ).encode() + b"hello\r\n" + extra


class Raw:
    """A bare SMTP connection: write bytes, read replies."""

    def __init__(self, port=PORT):
        self.s = socket.create_connection((HOST, port), timeout=20)
        self.f = self.s.makefile("rb")
        assert self.reply()[0] == 220

    def send(self, data):
        self.s.sendall(data)

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            assert line, "connection closed"
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def close(self):
        self.s.close()


# --- EHLO advertises the extensions -------------------------------------------------------
s = smtplib.SMTP(HOST, PORT)
code, text = s.ehlo("client.remote.example")
assert code == 250
for ext in ["pipelining", "8bitmime", "size", "enhancedstatuscodes", "smtputf8", "dsn", "chunking"]:
    assert s.has_extn(ext), (ext, text)
assert int(s.esmtp_features["size"]) > 0

# --- a message with DSN parameters, 8BITMIME and a dot-stuffed line -----------------------
body = msg("first", b".leading dot\r\ncaf\xc3\xa9 8bit\r\n")
r = s.sendmail(
    "sender@remote.example",
    [RCPT],
    body,
    mail_options=["BODY=8BITMIME", "RET=HDRS", "ENVID=env-1"],
    rcpt_options=["NOTIFY=FAILURE,DELAY", f"ORCPT=rfc822;{RCPT}"],
)
assert r == {}, r

# --- refusals with the right codes --------------------------------------------------------
code, text = s.mail("sender@remote.example", ["SIZE=999999999999"])
assert code == 552 and b"5.3.4" in text, (code, text)
s.rset()
s.mail("sender@remote.example")
code, text = s.rcpt("nobody@example.org")
assert code == 550 and b"5.1.1" in text, (code, text)
code, text = s.rcpt("someone@elsewhere.example")
assert code == 554 and b"5.7.1" in text, (code, text)
try:
    s.data(b"x")
    raise AssertionError("DATA without recipients accepted")
except smtplib.SMTPDataError as e:
    assert e.smtp_code == 503, e
s.rset()
code, text = s.docmd("DATA")
assert code == 503, (code, text)
code, text = s.docmd("BOGUS command")
assert code == 500 and b"5.5.1" in text, (code, text)
code, text = s.docmd("MAIL FROM:<no-brackets")
assert code == 501, (code, text)
s.quit()

# --- PIPELINING: a whole transaction in one write, replies in order -----------------------
c = Raw()
c.send(b"EHLO pipe.example\r\n")
assert c.reply()[0] == 250
c.send(
    b"MAIL FROM:<p@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
    b"RCPT TO:<ghost@example.org>\r\nDATA\r\n"
)
codes = [c.reply()[0] for _ in range(4)]
assert codes == [250, 250, 550, 354], codes
c.send(msg("pipelined") + b".\r\n")
code, lines = c.reply()
assert code == 250 and "queued as" in lines[0], lines

# --- CHUNKING: BDAT in two chunks, the last one marked LAST --------------------------------
part = msg("chunked")
a, b = part[:20], part[20:]
c.send(b"MAIL FROM:<c@remote.example>\r\nRCPT TO:<alice@example.org>\r\n")
assert [c.reply()[0] for _ in range(2)] == [250, 250]
c.send(b"BDAT %d\r\n" % len(a) + a)
assert c.reply()[0] == 250
c.send(b"BDAT %d LAST\r\n" % len(b) + b)
code, lines = c.reply()
assert code == 250 and "queued as" in lines[0], lines
# BDAT without a transaction: the chunk is read (stream stays in step) and refused.
c.send(b"BDAT 5 LAST\r\nhello")
assert c.reply()[0] == 503
c.send(b"NOOP\r\n")
assert c.reply()[0] == 250

# --- hostile input: long lines, NUL, too many recipients, oversized data ------------------
c.send(b"NOOP " + b"x" * 100_000 + b"\r\n")
code, lines = c.reply()
assert code == 500 and "too long" in lines[0], lines
c.send(b"NOOP \x00\r\n")
assert c.reply()[0] == 500
c.send(b"NOOP\r\n")
assert c.reply()[0] == 250, "session still usable"
c.send(b"MAIL FROM:<many@remote.example>\r\n")
assert c.reply()[0] == 250
c.send(b"".join(b"RCPT TO:<alice@example.org>\r\n" for _ in range(MAX_RCPTS + 20)))
codes = [c.reply()[0] for _ in range(MAX_RCPTS + 20)]
assert codes[:MAX_RCPTS] == [250] * MAX_RCPTS and set(codes[MAX_RCPTS:]) == {452}, codes[-25:]
c.send(b"RSET\r\n")
assert c.reply()[0] == 250
c.close()

# --- submission needs AUTH before MAIL ----------------------------------------------------
c = Raw(SUBMISSION)
c.send(b"EHLO sub.example\r\nMAIL FROM:<x@example.org>\r\n")
assert c.reply()[0] == 250
code, lines = c.reply()
assert code == 530 and "5.7.0" in lines[0], lines
c.close()

# --- swaks, a real SMTP client ------------------------------------------------------------
out = subprocess.run(
    ["swaks", "--server", f"{HOST}:{PORT}", "--to", RCPT, "--from", "swaks@remote.example",
     "--header", "Subject: via swaks", "--body", "sent by swaks", "--pipeline"],
    capture_output=True, text=True, timeout=60,
)
assert out.returncode == 0 and "queued as" in out.stdout, out.stdout + out.stderr
out = subprocess.run(
    ["swaks", "--server", f"{HOST}:{PORT}", "--to", "someone@elsewhere.example",
     "--from", "swaks@remote.example", "--quit-after", "RCPT"],
    capture_output=True, text=True, timeout=60,
)
assert "554 5.7.1" in out.stdout, out.stdout

# --- every accepted message is in alice's INBOX exactly once ------------------------------
want = {"first", "pipelined", "chunked", "via swaks"}
M = imaplib.IMAP4(HOST, IMAP)
M.login(USER, PW)
got = []
for _ in range(100):
    M.select("INBOX")
    typ, data = M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])") if int(M.select("INBOX")[1][0]) else ("OK", [])
    got = [p[1].decode().split(":", 1)[1].strip() for p in data if isinstance(p, tuple)]
    if set(got) >= want:
        break
    time.sleep(0.1)
assert sorted(got) == sorted(want), got
first = [i + 1 for i, s in enumerate(got) if s == "first"][0]
raw = M.fetch(str(first), "(BODY.PEEK[])")[1][0][1]
assert raw.startswith(b"Received: from client.remote.example ("), raw[:200]
assert b"\r\n.leading dot\r\n" in raw and "café".encode() in raw, raw
M.logout()
print("smtp_commands: all checks passed")

"""Every member of the group accepts SMTP: a node that is not the master hands the message
to the master and answers 250 only once the master says it is committed.

Sends one message through each port of SMTP_PORTS (plain SMTP, PIPELINING as smtplib does
it, and one BDAT message through the first non-master port), then checks over IMAP that
each is in the INBOX exactly once.
Environment: SMTP_PORTS (comma-separated), IMAP_PORT, USER, PASSWORD, ADDRESS.
"""
import imaplib
import os
import smtplib
import socket
import time

HOST = "127.0.0.1"
PORTS = [int(p) for p in os.environ["SMTP_PORTS"].split(",")]
ADDR = os.environ["ADDRESS"]
subjects = []
for port in PORTS:
    subject = f"through port {port}"
    with smtplib.SMTP(HOST, port, timeout=30) as s:
        s.ehlo("client.example")
        code, text = s.mail("sender@example.net")
        assert code == 250, (port, code, text)
        code, text = s.rcpt(ADDR)
        assert code == 250, (port, code, text)
        code, text = s.data(f"From: sender@example.net\r\nTo: {ADDR}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())
        assert code == 250 and b"queued as" in text, (port, code, text)
    subjects.append(subject)

# BDAT through the last port, raw.
port = PORTS[-1]
msg = f"From: sender@example.net\r\nTo: {ADDR}\r\nSubject: bdat through {port}\r\n\r\nchunked\r\n".encode()
c = socket.create_connection((HOST, port), timeout=30)
f = c.makefile("rb")


def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line)
        if line[3:4] != "-":
            return lines


assert reply()[0].startswith("220")
c.sendall(b"EHLO client.example\r\n")
assert any("CHUNKING" in l for l in reply())
c.sendall(f"MAIL FROM:<sender@example.net>\r\nRCPT TO:<{ADDR}>\r\nBDAT {len(msg)} LAST\r\n".encode() + msg)
answers = [reply()[0], reply()[0], reply()[0]]
assert answers[0].startswith("250") and answers[1].startswith("250"), answers
assert answers[2].startswith("250 2.0.0"), answers
c.sendall(b"QUIT\r\n")
c.close()
subjects.append(f"bdat through {port}")

M = imaplib.IMAP4(HOST, int(os.environ["IMAP_PORT"]))
M.login(os.environ["USER"], os.environ["PASSWORD"])
found = {}
for _ in range(100):
    M.select("INBOX")
    found = {}
    typ, data = M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    for p in data:
        if isinstance(p, tuple):
            s = p[1].decode().strip().removeprefix("Subject: ")
            found[s] = found.get(s, 0) + 1
    if all(s in found for s in subjects):
        break
    time.sleep(0.1)
for s in subjects:
    assert found.get(s) == 1, (s, found)
print(f"smtp_every_node: {len(subjects)} messages through {len(PORTS)} nodes, each once")

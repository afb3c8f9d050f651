"""LMTP (RFC 2033): LHLO, one reply per accepted recipient after the data, local
recipients only; also through swaks --protocol LMTP.

Environment: LMTP_PORT, IMAP_PORT, USER, PASSWORD (alice), USER2, PASSWORD2 (bob).
"""
import imaplib
import os
import socket
import subprocess
import time

HOST = "127.0.0.1"
PORT = int(os.environ["LMTP_PORT"])

s = socket.create_connection((HOST, PORT), timeout=20)
f = s.makefile("rb")


def reply():
    lines = []
    while True:
        line = f.readline()
        assert line, "closed"
        lines.append(line.decode().rstrip("\r\n"))
        if line[3:4] != b"-":
            return int(line[:3]), lines


assert reply()[0] == 220
s.sendall(b"EHLO x\r\n")
assert reply()[0] == 500, "EHLO on LMTP"
s.sendall(b"LHLO front.example\r\n")
code, lines = reply()
assert code == 250 and any("PIPELINING" in l for l in lines), lines
s.sendall(b"MAIL FROM:<m@remote.example>\r\nRCPT TO:<alice@example.org>\r\n"
          b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
          b"RCPT TO:<x@elsewhere.example>\r\nDATA\r\n")
codes = [reply()[0] for _ in range(6)]
assert codes == [250, 250, 550, 250, 550, 354], codes
s.sendall(b"Subject: via lmtp\r\n\r\ntwo-tier\r\n.\r\n")
per_rcpt = [reply() for _ in range(2)]
assert [c for c, _ in per_rcpt] == [250, 250], per_rcpt
assert "<alice@example.org>" in per_rcpt[0][1][0] and "<bob@example.org>" in per_rcpt[1][1][0], per_rcpt
s.sendall(b"QUIT\r\n")
assert reply()[0] == 221

out = subprocess.run(
    ["swaks", "--protocol", "LMTP", "--server", f"{HOST}:{PORT}", "--to", "bob@example.org",
     "--from", "m@remote.example", "--header", "Subject: swaks lmtp"],
    capture_output=True, text=True, timeout=60,
)
assert out.returncode == 0 and "queued as" in out.stdout, out.stdout + out.stderr

for user, pw, want in [
    (os.environ["USER"], os.environ["PASSWORD"], ["via lmtp"]),
    (os.environ["USER2"], os.environ["PASSWORD2"], ["swaks lmtp", "via lmtp"]),
]:
    M = imaplib.IMAP4(HOST, int(os.environ["IMAP_PORT"]))
    M.login(user, pw)
    got = []
    for _ in range(100):
        n = int(M.select("INBOX")[1][0])
        got = sorted(p[1].decode().split(":", 1)[1].strip()
                     for p in (M.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] if n else [])
                     if isinstance(p, tuple))
        if got == want:
            break
        time.sleep(0.1)
    assert got == want, (user, got)
print("lmtp_commands: all checks passed")

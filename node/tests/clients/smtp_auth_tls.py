"""Submission: STARTTLS, implicit TLS (465), AUTH PLAIN/LOGIN, sender ownership, relay rules.

Environment: SMTP_PORT, SUBMISSION_PORT, SUBMISSIONS_PORT, IMAP_PORT, CAFILE, USER (login),
PASSWORD, ADDRESS (the user's address), HOST.
"""
import imaplib
import os
import smtplib
import socket
import ssl
import subprocess
import time

HOST = os.environ.get("HOST", "127.0.0.1")
SMTP = int(os.environ["SMTP_PORT"])
SUB = int(os.environ["SUBMISSION_PORT"])
SUBS = int(os.environ["SUBMISSIONS_PORT"])
IMAP = int(os.environ["IMAP_PORT"])
USER, PW, ADDR = os.environ["USER"], os.environ["PASSWORD"], os.environ["ADDRESS"]
ctx = ssl.create_default_context(cafile=os.environ["CAFILE"])


def msg(subject):
    return f"From: {ADDR}\r\nTo: {ADDR}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


# Before TLS: STARTTLS offered, AUTH not (require_tls_for_auth), AUTH refused with 538.
s = smtplib.SMTP(HOST, SUB)
s.ehlo("c.example")
assert s.has_extn("starttls") and not s.has_extn("auth"), s.esmtp_features
code, text = s.docmd("AUTH", "PLAIN AGFsaWNlAHB3")
assert code == 538 and b"5.7.11" in text, (code, text)
code, text = s.docmd("MAIL", f"FROM:<{ADDR}>")
assert code == 530, (code, text)
# STARTTLS, then AUTH PLAIN and a message to ourselves.
s.starttls(context=ctx)
s.ehlo("c.example")
assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"], s.esmtp_features
assert not s.has_extn("starttls")
try:
    s.login(USER, "wrong-password")
    raise AssertionError("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.login(USER, PW)
code, text = s.docmd("MAIL", "FROM:<someone-else@example.org>")
assert code == 553, (code, text)
s.rset()
assert s.sendmail(ADDR, [ADDR], msg("submitted over starttls")) == {}
# Authenticated: a foreign recipient is not refused as relaying (relay channel comes later).
s.mail(ADDR)
code, text = s.rcpt("friend@elsewhere.example")
assert code != 554, (code, text)
s.quit()

# Implicit TLS on 465 with AUTH LOGIN.
s = smtplib.SMTP_SSL(HOST, SUBS, context=ctx)
s.ehlo("c.example")
s.esmtp_features["auth"] = "LOGIN"  # make smtplib pick LOGIN
s.login(USER, PW)
assert s.sendmail(ADDR, [ADDR], msg("submitted over implicit tls")) == {}
s.quit()

# STARTTLS command injection: commands pipelined after STARTTLS in the clear are dropped.
raw = socket.create_connection((HOST, SMTP), timeout=10)
f = raw.makefile("rb")
f.readline()
raw.sendall(b"EHLO inj.example\r\n")
while f.readline()[3:4] == b"-":
    pass
raw.sendall(b"STARTTLS\r\nRSET\r\n")
assert f.readline().startswith(b"220"), "STARTTLS"
tls = ctx.wrap_socket(raw, server_hostname="localhost")
tf = tls.makefile("rb")
tls.sendall(b"NOOP\r\n")
line = tf.readline()
assert line.startswith(b"250 "), f"the injected RSET was answered: {line}"
tls.sendall(b"QUIT\r\n")
tls.close()

# swaks over STARTTLS with AUTH.
out = subprocess.run(
    ["swaks", "--server", f"{HOST}:{SUB}", "--tls", "--auth", "PLAIN", "--auth-user", USER,
     "--auth-password", PW, "--from", ADDR, "--to", ADDR, "--header", "Subject: swaks submission"],
    capture_output=True, text=True, timeout=60,
)
assert out.returncode == 0 and "235 2.7.0" in out.stdout, out.stdout + out.stderr

# All three arrived; the trace header shows TLS and authentication.
want = {"submitted over starttls", "submitted over implicit tls", "swaks submission"}
M = imaplib.IMAP4(HOST, IMAP)
M.login(USER, PW)
for _ in range(100):
    n = int(M.select("INBOX")[1][0])
    data = M.fetch("1:*", "(BODY.PEEK[HEADER])")[1] if n else []
    heads = [p[1].decode() for p in data if isinstance(p, tuple)]
    subjects = {l.split(":", 1)[1].strip() for h in heads for l in h.split("\r\n") if l.startswith("Subject:")}
    if subjects >= want:
        break
    time.sleep(0.1)
assert subjects >= want, subjects
h = [h for h in heads if "implicit tls" in h][0]
assert "with ESMTPSA" in h and "using TLSv1" in h, h
print("smtp_auth_tls: all checks passed")

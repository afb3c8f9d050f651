"""TLS for IMAP and POP3: STARTTLS/STLS, implicit TLS, LOGINDISABLED before TLS, and a
certificate reloaded on SIGHUP without dropping sessions.
Environment: IMAP_PORT, IMAPS_PORT, POP3_PORT, POP3S_PORT, CAFILE, USER, PASSWORD,
NODE_PID, NEW_CERT (a file: when present, the script triggers and checks a reload)."""
import imaplib
import os
import poplib
import shutil
import signal
import ssl
import time

HOST = "127.0.0.1"
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
ctx = ssl.create_default_context(cafile=os.environ["CAFILE"])

# IMAP: before TLS, logins are refused and advertised as such.
M = imaplib.IMAP4(HOST, int(os.environ["IMAP_PORT"]))
assert "LOGINDISABLED" in M.capabilities and "STARTTLS" in M.capabilities, M.capabilities
assert "AUTH=PLAIN" not in M.capabilities
try:
    M.login(USER, PW)
    raise AssertionError("LOGIN accepted before TLS")
except imaplib.IMAP4.error as e:
    assert "PRIVACYREQUIRED" in str(e) or "STARTTLS" in str(e), e
M.starttls(ssl_context=ctx)
caps = M.capability()[1][0].split()
assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps, caps
assert M.login(USER, PW)[0] == "OK"
assert M.select("INBOX")[0] == "OK"
M.logout()

S = imaplib.IMAP4_SSL(HOST, int(os.environ["IMAPS_PORT"]), ssl_context=ctx)
assert S.login(USER, PW)[0] == "OK"
held = S  # kept open across the reload below

# POP3: STLS and implicit TLS.
P = poplib.POP3(HOST, int(os.environ["POP3_PORT"]))
assert "STLS" in P.capa() and "USER" not in P.capa(), P.capa()
try:
    P.user(USER)
    raise AssertionError("USER accepted before STLS")
except poplib.error_proto as e:
    assert b"STLS" in e.args[0], e
P.stls(context=ctx)
P.user(USER)
assert P.pass_(PW).startswith(b"+OK")
P.quit()
Q = poplib.POP3_SSL(HOST, int(os.environ["POP3S_PORT"]), context=ctx)
Q.user(USER)
assert Q.pass_(PW).startswith(b"+OK")
Q.quit()

# SIGHUP: new handshakes get the new certificate; the open session carries on.
new_cert = os.environ.get("NEW_CERT")
if new_cert:
    before = ssl.get_server_certificate((HOST, int(os.environ["IMAPS_PORT"])))
    shutil.copy(new_cert, os.environ["CERT_PATH"])
    shutil.copy(os.environ["NEW_KEY"], os.environ["KEY_PATH"])
    os.kill(int(os.environ["NODE_PID"]), signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline:
        now = ssl.get_server_certificate((HOST, int(os.environ["IMAPS_PORT"])))
        if now != before:
            break
        time.sleep(0.2)
    assert now != before, "certificate not reloaded on SIGHUP"
    ctx2 = ssl.create_default_context(cafile=os.environ["NEW_CAFILE"])
    T = imaplib.IMAP4_SSL(HOST, int(os.environ["IMAPS_PORT"]), ssl_context=ctx2)
    assert T.login(USER, PW)[0] == "OK"
    T.logout()
    assert held.noop()[0] == "OK", "session dropped by the reload"
held.logout()
print("tls_clients ok")

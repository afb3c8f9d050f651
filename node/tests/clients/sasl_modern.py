"""SCRAM-SHA-256, SCRAM-SHA-256-PLUS and EXTERNAL against IMAP, POP3 and submission, with
clients we did not write: scramp (SCRAM), imaplib/poplib/smtplib, OpenSSL's s_client (for the
tls-exporter keying material, which Python's ssl cannot export).
Environment: IMAP_PORT, IMAPS_PORT, POP3S_PORT, SUBMISSION_PORT, CAFILE, USER, PASSWORD,
USER2, PASSWORD2, ALICE_CERT/ALICE_KEY (a client certificate for USER's address),
MALLORY_CERT/MALLORY_KEY (a certificate for an address that is no user)."""
import base64
import imaplib
import os
import poplib
import smtplib
import ssl
import subprocess

import scramp

HOST = "127.0.0.1"
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
USER2, PW2 = os.environ["USER2"], os.environ["PASSWORD2"]
CA = os.environ["CAFILE"]


def ctx(cert=None, key=None):
    c = ssl.create_default_context(cafile=CA)
    if cert:
        c.load_cert_chain(cert, key)
    return c


def scram_auth(mech, user, pw, binding=None):
    """An imaplib/smtplib authobject driving scramp; returns (callback, client)."""
    c = scramp.ScramClient([mech], user, pw, channel_binding=binding)
    state = {"step": 0}

    def step(challenge=None):
        state["step"] += 1
        if state["step"] == 1:
            return c.get_client_first().encode()
        if state["step"] == 2:
            c.set_server_first(challenge.decode())
            return c.get_client_final().encode()
        c.set_server_final(challenge.decode())  # raises unless the server proved its key
        state["verified"] = True
        return b""

    return step, state


def imaps(cert=None, key=None):
    return imaplib.IMAP4_SSL(HOST, int(os.environ["IMAPS_PORT"]), ssl_context=ctx(cert, key))


# --- IMAP: what is offered where.
M = imaplib.IMAP4(HOST, int(os.environ["IMAP_PORT"]))
assert "LOGINDISABLED" in M.capabilities, M.capabilities
assert not any(c.startswith("AUTH=") for c in M.capabilities), M.capabilities
M.starttls(ssl_context=ctx())
caps = M.capability()[1][0].decode().split()
for m in ("AUTH=SCRAM-SHA-256-PLUS", "AUTH=SCRAM-SHA-256", "AUTH=PLAIN"):
    assert m in caps, caps
assert "AUTH=EXTERNAL" not in caps, "EXTERNAL offered without a client certificate"
# SCRAM-SHA-256 without channel binding, after STARTTLS.
step, st = scram_auth("SCRAM-SHA-256", USER, PW)
assert M.authenticate("SCRAM-SHA-256", step)[0] == "OK"
assert st.get("verified"), "the server's signature was not checked"
assert M.select("INBOX")[0] == "OK"
M.logout()

# --- IMAP: SCRAM-SHA-256-PLUS with tls-server-end-point (the certificate's hash).
M = imaps()
step, st = scram_auth(
    "SCRAM-SHA-256-PLUS", USER, PW, ("tls-server-end-point", M.sock)
)
assert M.authenticate("SCRAM-SHA-256-PLUS", step)[0] == "OK"
assert st.get("verified")
M.logout()

# A binding of another certificate (a man in the middle's) is refused.
M = imaps()
step, st = scram_auth(
    "SCRAM-SHA-256-PLUS", USER, PW, ("tls-server-end-point", b"\x00" * 32)
)
try:
    M.authenticate("SCRAM-SHA-256-PLUS", step)
    raise AssertionError("a wrong channel binding was accepted")
except imaplib.IMAP4.error as e:
    assert "channel-bindings-dont-match" in str(e) or "BAD" in str(e) or "NO" in str(e), e
M.logout()

# A client that could bind but was told the server cannot ("y") is a downgrade: refused.
M = imaps()
cf = "y,,n=%s,r=abcdefghijklmnop" % USER


def downgrade(challenge=None):
    return cf.encode()


try:
    M.authenticate("SCRAM-SHA-256", downgrade)
    raise AssertionError("a downgraded SCRAM was accepted")
except imaplib.IMAP4.error as e:
    assert "server-does-support-channel-binding" in str(e), e
M.logout()

# --- IMAP: SCRAM-SHA-256-PLUS with tls-exporter (RFC 9266). s_client exports the keying
# material of its TLS 1.3 session; scramp computes the SCRAM messages (its type check is
# widened to the name: the computation is the same for every binding type).
scramp.core.CbName.SUPPORTED_TYPES = scramp.core.CbName.SUPPORTED_TYPES | {"tls-exporter"}
scramp.core.CbName.UNSUPPORTED_TYPES = frozenset()
p = subprocess.Popen(
    ["openssl", "s_client", "-connect", "%s:%s" % (HOST, os.environ["IMAPS_PORT"]),
     "-CAfile", CA, "-tls1_3", "-crlf", "-nocommands", "-ign_eof",
     "-keymatexport", "EXPORTER-Channel-Binding", "-keymatexportlen", "32"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
)


def line():
    ln = p.stdout.readline()
    assert ln, "s_client ended"
    return ln.decode().rstrip("\r\n")


exported = None
while True:
    ln = line()
    if "Keying material:" in ln:
        exported = bytes.fromhex(ln.split(":", 1)[1].strip())
    if ln.startswith("* OK"):
        break
assert exported and len(exported) == 32, exported


def send(s):
    p.stdin.write((s + "\n").encode())
    p.stdin.flush()


c = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], USER, PW, channel_binding=("tls-exporter", exported))
send("a1 AUTHENTICATE SCRAM-SHA-256-PLUS " + base64.b64encode(c.get_client_first().encode()).decode())
ln = line()
assert ln.startswith("+ "), ln
c.set_server_first(base64.b64decode(ln[2:]).decode())
send(base64.b64encode(c.get_client_final().encode()).decode())
ln = line()
assert ln.startswith("+ "), ln
c.set_server_final(base64.b64decode(ln[2:]).decode())
send("")
ln = line()
assert ln.startswith("a1 OK"), ln
send("a2 LOGOUT")
p.stdin.close()
p.wait(timeout=10)

# --- POP3: SCRAM-SHA-256-PLUS over implicit TLS, by hand (poplib has no AUTH helper).
P = poplib.POP3_SSL(HOST, int(os.environ["POP3S_PORT"]), context=ctx())
capa = P.capa()
assert "SCRAM-SHA-256-PLUS" in capa["SASL"] and "SCRAM-SHA-256" in capa["SASL"], capa
c = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], USER, PW, channel_binding=("tls-server-end-point", P.sock))


def pop_round(data):
    P._putcmd(base64.b64encode(data.encode()).decode())
    r = P._getline()[0].decode()
    assert r.startswith("+ "), r
    return base64.b64decode(r[2:]).decode()


P._putcmd("AUTH SCRAM-SHA-256-PLUS")
assert P._getline()[0].startswith(b"+"), "no continuation"
c.set_server_first(pop_round(c.get_client_first()))
c.set_server_final(pop_round(c.get_client_final()))
P._putcmd("")
r = P._getline()[0]
assert r.startswith(b"+OK"), r
assert P.stat()[0] >= 0
P.quit()

# --- Submission: SCRAM-SHA-256-PLUS after STARTTLS with smtplib.
S = smtplib.SMTP(HOST, int(os.environ["SUBMISSION_PORT"]))
S.ehlo()
S.starttls(context=ctx())
S.ehlo()
auth = S.esmtp_features["auth"].split()
assert "SCRAM-SHA-256-PLUS" in auth and "SCRAM-SHA-256" in auth, auth
c = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], USER, PW, channel_binding=("tls-server-end-point", S.sock))
steps = iter([None, "final", "done"])


def smtp_scram(challenge=None):
    s = next(steps)
    if s is None:
        return c.get_client_first()
    if s == "final":
        c.set_server_first(challenge.decode())
        return c.get_client_final()
    c.set_server_final(challenge.decode())
    return ""


code, _ = S.auth("SCRAM-SHA-256-PLUS", smtp_scram, initial_response_ok=True)
assert code == 235, code
S.quit()

# --- EXTERNAL: alice's certificate logs in as alice, on IMAP, POP3 and submission.
M = imaps(os.environ["ALICE_CERT"], os.environ["ALICE_KEY"])
assert "AUTH=EXTERNAL" in M.capabilities, M.capabilities
assert M.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
assert M.select("INBOX")[0] == "OK"
M.logout()
# ... but not as someone else.
M = imaps(os.environ["ALICE_CERT"], os.environ["ALICE_KEY"])
try:
    M.authenticate("EXTERNAL", lambda _: USER2.encode())
    raise AssertionError("EXTERNAL authorised alice's certificate as another user")
except imaplib.IMAP4.error as e:
    assert "AUTHENTICATIONFAILED" in str(e), e
M.logout()
P = poplib.POP3_SSL(HOST, int(os.environ["POP3S_PORT"]), context=ctx(os.environ["ALICE_CERT"], os.environ["ALICE_KEY"]))
assert "EXTERNAL" in P.capa()["SASL"]
assert P._shortcmd("AUTH EXTERNAL =").startswith(b"+OK")
P.quit()
S = smtplib.SMTP(HOST, int(os.environ["SUBMISSION_PORT"]))
S.starttls(context=ctx(os.environ["ALICE_CERT"], os.environ["ALICE_KEY"]))
S.ehlo()
assert "EXTERNAL" in S.esmtp_features["auth"].split()
code, _ = S.auth("EXTERNAL", lambda challenge=None: "", initial_response_ok=True)
assert code == 235, code
S.quit()

# --- Failures of every mechanism count against the same throttle (4 per address here): the
# EXTERNAL above that claimed another user, a wrong SCRAM proof, a wrong PLAIN password, a
# certificate that names no user; then even the right password is refused for a while, by
# SCRAM and by LOGIN alike.
M = imaps()
step, _ = scram_auth("SCRAM-SHA-256", USER2, "wrong")
try:
    M.authenticate("SCRAM-SHA-256", step)
    raise AssertionError("a wrong SCRAM password was accepted")
except imaplib.IMAP4.error as e:
    assert "AUTHENTICATIONFAILED" in str(e), e
try:
    M.authenticate("PLAIN", lambda _: ("\0%s\0wrong" % USER2).encode())
    raise AssertionError("a wrong PLAIN password was accepted")
except imaplib.IMAP4.error as e:
    assert "AUTHENTICATIONFAILED" in str(e), e
M.logout()
M = imaps(os.environ["MALLORY_CERT"], os.environ["MALLORY_KEY"])
try:
    M.authenticate("EXTERNAL", lambda _: b"")
    raise AssertionError("a certificate of no user was accepted")
except imaplib.IMAP4.error as e:
    assert "AUTHENTICATIONFAILED" in str(e), e
M.logout()
M = imaps()
step, _ = scram_auth("SCRAM-SHA-256", USER2, PW2)
try:
    M.authenticate("SCRAM-SHA-256", step)
    raise AssertionError("the throttle let a SCRAM login through")
except imaplib.IMAP4.error as e:
    assert "UNAVAILABLE" in str(e), e
try:
    M.login(USER2, PW2)
    raise AssertionError("the throttle let a LOGIN through")
except imaplib.IMAP4.error as e:
    assert "UNAVAILABLE" in str(e), e
M.logout()
print("SCRAM-SHA-256(-PLUS) and EXTERNAL: OK")

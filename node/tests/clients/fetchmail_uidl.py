"""fetchmail in keep mode with UIDL: the second run fetches only the new message."""
import imaplib
import os
import subprocess

HOST = os.environ.get("HOST", "127.0.0.1")
IMAP, POP = int(os.environ["IMAP_PORT"]), int(os.environ["POP3_PORT"])
USER, PW = os.environ["USER2"], os.environ["PASSWORD2"]
WORK = os.environ["WORK"]
os.makedirs(WORK, exist_ok=True)
rc = os.path.join(WORK, "fetchmailrc")
with open(rc, "w") as f:
    f.write(f'poll {HOST} protocol pop3 port {POP} uidl:\n  user "{USER}" password "{PW}" is root here keep sslproto ""\n')
os.chmod(rc, 0o600)
out = os.path.join(WORK, "bsmtp")
idfile = os.path.join(WORK, "ids")


def fetch():
    r = subprocess.run(["fetchmail", "-f", rc, "--idfile", idfile, "--bsmtp", out, "--nodetach",
                        "--nosyslog", "--invisible"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, FETCHMAILHOME=WORK))
    # 0: mail fetched; 1: no new mail.
    assert r.returncode in (0, 1), f"fetchmail exit {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return open(out).read().count("\nDATA\n") if os.path.exists(out) else 0


M = imaplib.IMAP4(HOST, IMAP)
M.login(USER, PW)
for n in range(2):
    assert M.append("INBOX", None, None, f"Subject: fm {n}\r\n\r\nbody {n}\r\n".encode())[0] == "OK"
assert fetch() == 2
assert fetch() == 2, "keep mode with UIDL fetched old mail again"
assert M.append("INBOX", None, None, b"Subject: fm new\r\n\r\nnew\r\n")[0] == "OK"
assert fetch() == 3, "the new message was not fetched exactly once"
typ, data = M.select("INBOX")
assert int(data[0]) == 3, "keep mode deleted mail"
M.logout()
print("fetchmail ok")

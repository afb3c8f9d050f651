"""Two-way sync with mbsync (isync) between Halyard and a local Maildir.

PHASE=initial: pull, push a new message (APPENDUID), flag changes both ways, deletions both
ways. PHASE=again (after a cluster restart or a leader change): sync again — no error, no
duplicate, UIDVALIDITY unchanged, and a new message still flows both ways.
Environment: IMAP_PORT, USER, PASSWORD, WORK (a directory kept between phases).
"""
import glob
import imaplib
import os
import subprocess
import time

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
WORK = os.environ["WORK"]
PHASE = os.environ["PHASE"]
MAIL = os.path.join(WORK, "Maildir")
os.makedirs(MAIL, exist_ok=True)
rc = os.path.join(WORK, "mbsyncrc")
with open(rc, "w") as f:
    f.write(f"""IMAPAccount halyard
Host {HOST}
Port {PORT}
User {USER}
Pass {PW}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account halyard

MaildirStore local
Path {MAIL}/
Inbox {MAIL}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")


def mbsync():
    r = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"mbsync failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def local(box="INBOX"):
    return sorted(glob.glob(os.path.join(MAIL, box, "cur", "*")) +
                  glob.glob(os.path.join(MAIL, box, "new", "*")))


def imap():
    M = imaplib.IMAP4(HOST, PORT)
    M.login(USER, PW)
    return M


def remote_count(M, box="INBOX"):
    typ, data = M.select(box)
    assert typ == "OK", data
    return int(data[0])


def msg(n):
    return (f"From: sender{n}@example.org\r\nTo: {USER}@example.org\r\nSubject: sync test {n}\r\n"
            f"Message-ID: <sync{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


if PHASE == "initial":
    M = imap()
    for n in range(3):
        assert M.append("INBOX", None, None, msg(n))[0] == "OK"
    M.create("Archive")
    assert M.append("Archive", "(\\Seen)", None, msg(10))[0] == "OK"
    out = mbsync()
    assert len(local()) == 3, (local(), out)
    assert len(local("Archive")) == 1, out

    # Push: a new message written into the Maildir reaches the server (APPENDUID).
    new = os.path.join(MAIL, "INBOX", "new", "1700000000.halyardtest.local")
    with open(new, "wb") as f:
        f.write(msg(4).replace(b"\r\n", b"\n"))
    mbsync()
    assert remote_count(M) == 4
    assert M.search(None, "SUBJECT", '"sync test 4"')[1][0] != b""

    # Flags: flag locally (F), seen remotely (S); both sides agree after a sync.
    f0 = local()[0]
    os.rename(f0, f0.replace("/new/", "/cur/").split(":2,")[0] + ":2,F")
    M.store("2", "+FLAGS", "(\\Seen)")
    mbsync()
    assert M.search(None, "FLAGGED")[1][0].split() != [], "local flag not pushed"
    seen_local = [p for p in local() if ":2," in p and "S" in p.split(":2,")[1]]
    assert seen_local, ("remote \\Seen not pulled", local())

    # Deletions both ways.
    M.store("3", "+FLAGS", "(\\Deleted)")
    M.expunge()
    mbsync()
    assert len(local()) == 3, local()
    os.remove(local()[0])
    mbsync()
    assert remote_count(M) == 2, "local deletion not pushed"
    M.logout()
    uv = open(os.path.join(MAIL, "INBOX", ".uidvalidity")).read() if os.path.exists(
        os.path.join(MAIL, "INBOX", ".uidvalidity")) else ""
    print("mbsync initial ok")
else:
    before = len(local())
    out = mbsync()
    assert "UIDVALIDITY" not in out.upper() or "changed" not in out.lower(), out
    M = imap()
    assert len(local()) == before == remote_count(M), (before, len(local()), out)
    # Still two-way after the restart / failover.
    n = int(time.time())
    assert M.append("INBOX", None, None, msg(n))[0] == "OK"
    mbsync()
    assert len(local()) == before + 1, local()
    mbsync()  # idempotent: nothing duplicated
    assert len(local()) == before + 1 == remote_count(M), (local(), remote_count(M))
    subjects = M.search(None, "ALL")[1][0].split()
    assert len(subjects) == before + 1
    M.logout()
    print("mbsync again ok")

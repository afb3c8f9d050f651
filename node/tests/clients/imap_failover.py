"""PHASE=append: APPEND on the master, record APPENDUID; SELECT takes it as \\Recent; a second
message waits, unclaimed, in another mailbox. PHASE=check: the same message with the same
UIDVALIDITY and UID is on the (new) master; \\Recent stayed exact across the failover (the
claimed message is recent nowhere, the unclaimed one in exactly one session)."""
import imaplib
import os
import re

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])
USER, PW = os.environ["USER"], os.environ["PASSWORD"]
STATE = os.environ["STATE"]
BODY = b"From: a@example.org\r\nSubject: survive\r\n\r\nmust survive a kill -9\r\n"

M = imaplib.IMAP4(HOST, PORT)
M.login(USER, PW)
if os.environ["PHASE"] == "append":
    typ, data = M.append("INBOX", None, None, BODY)
    assert typ == "OK", data
    m = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    open(STATE, "w").write(f"{m.group(1).decode()} {m.group(2).decode()}")
    typ, data = M.select("INBOX")
    assert typ == "OK" and M.response("RECENT")[1] == [b"1"], M.response("RECENT")
    assert M.create("Later")[0] == "OK"
    assert M.append("Later", None, None, BODY)[0] == "OK"
else:
    uv, uid = open(STATE).read().split()
    typ, data = M.select("INBOX")
    assert typ == "OK", data
    assert uv in str(M.response("UIDVALIDITY")), (uv, M.response("UIDVALIDITY"))
    typ, data = M.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK" and any(isinstance(p, tuple) and p[1] == BODY for p in data), data
    assert M.search(None, "ALL")[1][0].split() == [b"1"], "duplicated or lost"
    # Claimed as recent by the session on the old master: recent nowhere now.
    assert M.response("RECENT")[1] == [b"0"], M.response("RECENT")
    assert M.search(None, "RECENT")[1] == [b""], "claimed message recent again"
    # The unclaimed one: recent in the first session to select it, only there.
    assert M.select("Later")[0] == "OK"
    assert M.response("RECENT")[1] == [b"1"], M.response("RECENT")
    N = imaplib.IMAP4(HOST, PORT)
    N.login(USER, PW)
    assert N.select("Later")[0] == "OK"
    assert N.response("RECENT")[1] == [b"0"], N.response("RECENT")
    N.logout()
M.logout()
print("imap_failover", os.environ["PHASE"], "ok")

"""Checks delivery status notifications (RFC 3464) in a mailbox, parsed with Python's email.

Environment: IMAP_PORT, USER, PASSWORD, FAILED (the recipients reported), SUBJECT (of the
returned message), COUNT (reports expected), optional STATUS (e.g. 5.0.0), optional ACTION
(`failed`, the default, or `delayed`: then reports of other kinds are ignored, each delayed
recipient must carry Will-Retry-Until, and after SETTLE seconds there must still be
exactly COUNT of them — a delay warning is sent once).
"""
import email
import imaplib
import os
import time

M = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP_PORT"]))
M.login(os.environ["USER"], os.environ["PASSWORD"])
want = int(os.environ["COUNT"])
action = os.environ.get("ACTION", "failed")


def actions(m):
    parts = m.get_payload()
    if len(parts) < 2 or parts[1].get_content_type() != "message/delivery-status":
        return set()
    return {r["Action"] for r in parts[1].get_payload()[1:]}


def read_reports():
    out = []
    n = int(M.select("INBOX")[1][0])
    if n:
        for p in M.fetch("1:*", "(BODY.PEEK[])")[1]:
            if isinstance(p, tuple):
                m = email.message_from_bytes(p[1])
                if m.get_content_type() == "multipart/report" and action in actions(m):
                    out.append(m)
    return out


reports = []
for _ in range(150):
    reports = read_reports()
    if len(reports) >= want:
        break
    time.sleep(0.2)
assert len(reports) == want, f"{len(reports)} reports, expected {want}"
if action == "delayed":
    time.sleep(float(os.environ.get("SETTLE", "0")))
    again = len(read_reports())
    assert again == want, f"{again} delay reports after waiting, expected {want}"
failed = set()
for m in reports:
    assert m.get_param("report-type") == "delivery-status", m["Content-Type"]
    assert m["From"].startswith("Mail Delivery System <MAILER-DAEMON@"), m["From"]
    assert m["Auto-Submitted"] == "auto-replied"
    parts = m.get_payload()
    types = [p.get_content_type() for p in parts]
    assert types[:2] == ["text/plain", "message/delivery-status"], types
    # email parses message/delivery-status into header blocks: per message, per recipient.
    for per_rcpt in parts[1].get_payload()[1:]:
        assert per_rcpt["Action"] == action, per_rcpt["Action"]
        if action == "delayed":
            assert per_rcpt["Will-Retry-Until"], per_rcpt.items()
        assert per_rcpt["Status"].startswith(os.environ.get("STATUS", "5.")), per_rcpt["Status"]
        failed.add(per_rcpt["Final-Recipient"].split(";", 1)[1].strip())
    text = parts[2].as_string()
    assert any(s in text for s in os.environ["SUBJECT"].split(",")), text[:500]
want_failed = set(os.environ["FAILED"].split(","))
assert failed == want_failed, (failed, want_failed)
print(f"dsn_check: {want} report(s) as expected")

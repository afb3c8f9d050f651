"""Checks delivery status notifications (RFC 3464) in a mailbox, parsed with Python's email.

Environment: IMAP_PORT, USER, PASSWORD, FAILED (the failed recipient), SUBJECT (of the
returned message), COUNT (reports expected), optional STATUS (e.g. 5.0.0).
"""
import email
import imaplib
import os
import time

M = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP_PORT"]))
M.login(os.environ["USER"], os.environ["PASSWORD"])
want = int(os.environ["COUNT"])
reports = []
for _ in range(150):
    n = int(M.select("INBOX")[1][0])
    reports = []
    if n:
        for p in M.fetch("1:*", "(BODY.PEEK[])")[1]:
            if isinstance(p, tuple):
                m = email.message_from_bytes(p[1])
                if m.get_content_type() == "multipart/report":
                    reports.append(m)
    if len(reports) >= want:
        break
    time.sleep(0.2)
assert len(reports) == want, f"{len(reports)} reports, expected {want}"
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
        assert per_rcpt["Action"] == "failed", per_rcpt["Action"]
        assert per_rcpt["Status"].startswith(os.environ.get("STATUS", "5.")), per_rcpt["Status"]
        failed.add(per_rcpt["Final-Recipient"].split(";", 1)[1].strip())
    text = parts[2].as_string()
    assert any(s in text for s in os.environ["SUBJECT"].split(",")), text[:500]
want_failed = set(os.environ["FAILED"].split(","))
assert failed == want_failed, (failed, want_failed)
print(f"dsn_check: {want} report(s) as expected")

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
m = reports[0]
assert m.get_param("report-type") == "delivery-status", m["Content-Type"]
assert m["From"].startswith("Mail Delivery System <MAILER-DAEMON@"), m["From"]
assert m["Auto-Submitted"] == "auto-replied"
parts = m.get_payload()
assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"], [p.get_content_type() for p in parts]
status = parts[1].get_payload()
# email parses message/delivery-status into a list of header blocks: per-message, per-recipient.
per_rcpt = status[1]
assert per_rcpt["Final-Recipient"] == f"rfc822; {os.environ['FAILED']}", per_rcpt["Final-Recipient"]
assert per_rcpt["Action"] == "failed", per_rcpt["Action"]
assert per_rcpt["Status"].startswith(os.environ.get("STATUS", "5.")), per_rcpt["Status"]
returned = parts[2]
text = returned.as_string()
assert os.environ["SUBJECT"] in text, text[:500]
print(f"dsn_check: {want} report(s) as expected")

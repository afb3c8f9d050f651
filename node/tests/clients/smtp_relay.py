"""Relaying through the SMTP channel: bob submits (AUTH) mail for other domains.

Environment: SUBMISSION_PORT, SMTP_PORT, USER, PASSWORD, ADDRESS.
"""
import os
import smtplib

HOST = "127.0.0.1"
USER, PW, ADDR = os.environ["USER"], os.environ["PASSWORD"], os.environ["ADDRESS"]

# Without authentication, from an untrusted address: relaying is refused.
s = smtplib.SMTP(HOST, int(os.environ["SMTP_PORT"]))
s.ehlo("c.example")
s.mail(ADDR)
code, text = s.rcpt("a@ok.test")
assert code == 554 and b"5.7.1" in text, (code, text)
s.quit()



def refused_at_connect(source, why):
    """A client connecting to the SMTP port from `source` gets 554 naming `why`."""
    try:
        smtplib.SMTP(HOST, int(os.environ["SMTP_PORT"]), source_address=(source, 0))
        raise AssertionError(f"{source} accepted")
    except smtplib.SMTPConnectError as e:
        assert e.smtp_code == 554 and why in e.smtp_error, e


# DNSBL: a client connecting from a listed address (127.0.0.9) is refused at once.
refused_at_connect("127.0.0.9", b"bl.test")
# ... but the same address may submit (it authenticates; blocklists are for the MX port).
s = smtplib.SMTP(HOST, int(os.environ["SUBMISSION_PORT"]), source_address=("127.0.0.9", 0))
assert s.ehlo("c.example")[0] == 250
s.quit()
# client_access: 127.0.0.8 is denied outright, before anything else.
refused_at_connect("127.0.0.8", b"not allowed")
# mailfromdnsverify: a sender domain that does not exist is refused, an existing one is not.
s = smtplib.SMTP(HOST, int(os.environ["SMTP_PORT"]))
s.ehlo("c.example")
code, text = s.mail("someone@nx.test")
assert code == 550 and b"5.1.8" in text, (code, text)
s.rset()
code, text = s.mail("someone@ok.test")
assert code == 250, (code, text)
s.quit()

s = smtplib.SMTP(HOST, int(os.environ["SUBMISSION_PORT"]))
s.ehlo("c.example")
s.login(USER, PW)
for rcpt, subject in [
    ("a@ok.test", "relay ok"),
    ("b@implicit.test", "relay implicit mx"),
    ("c@fallback.test", "relay fallback"),
    ("d@soft.test", "relay soft"),
    ("g@soft.test", "relay soft, no delay report wanted"),
    ("e@hard.test", "relay hard"),
    ("f@nx.test", "relay nxdomain"),
]:
    body = f"From: {ADDR}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nrelayed body\r\n.dotline\r\n"
    r = s.sendmail(ADDR, [rcpt], body.encode(), rcpt_options=[f"ORCPT=rfc822;{rcpt}"] if "hard" in rcpt
                   else ["NOTIFY=FAILURE"] if rcpt.startswith("g@") else [])
    assert r == {}, r
s.quit()
print("smtp_relay: submitted")

"""Logins through every node of a testbed that requires TLS for logins, while the cluster
bridge is captured (by the test): IMAP without TLS is refused with PRIVACYREQUIRED; IMAPS,
IMAP STARTTLS and POP3S work through every node, the master's and the others' (the
multiplexor); a message appended through one non-master node is read back through
another. The password and the message's body are distinctive, so that the test can look
for them in the capture.

Environment: NODES (comma-separated node addresses), MASTER (the master's address), CAFILE,
USER, PASSWORD, MARKER (a string in the body).
"""
import imaplib
import os
import socket
import ssl

NODES = os.environ["NODES"].split(",")
MASTER = os.environ["MASTER"]
USER, PW, MARKER = os.environ["USER"], os.environ["PASSWORD"], os.environ["MARKER"]
NAME = "mail.cluster.test"

ctx = ssl.create_default_context(cafile=os.environ["CAFILE"])


class Imaps(imaplib.IMAP4_SSL):
    """IMAPS to an address, checking the certificate for the mail name."""

    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=NAME)


class Imap(imaplib.IMAP4):
    def starttls_for_name(self):
        # imaplib's starttls checks the certificate against the host it dialled (an address);
        # the certificate names the mail host.
        typ, dat = self._simple_command("STARTTLS")
        assert typ == "OK", dat
        self.sock = ctx.wrap_socket(self.sock, server_hostname=NAME)
        self.file = self.sock.makefile("rb")
        self._get_capabilities()


def via(answer):
    return b"via node" in answer


for host in NODES:
    # No TLS: refused before the password is even looked at. (A client that sends LOGIN
    # in clear gives its password away whatever the server answers, so not the real one.)
    m = Imap(host, 143, timeout=20)
    assert "LOGINDISABLED" in m.capabilities, (host, m.capabilities)
    try:
        m.login("someone-else", "not-the-password")
        raise AssertionError(f"{host}: LOGIN without TLS was accepted")
    except imaplib.IMAP4.error as e:
        assert "PRIVACYREQUIRED" in str(e), (host, e)
    m.starttls_for_name()
    typ, data = m.login(USER, PW)
    assert typ == "OK" and via(data[0]) == (host != MASTER), (host, data)
    assert m.select("INBOX")[0] == "OK"
    m.logout()

    s = Imaps(host, 993, ssl_context=ctx, timeout=20)
    typ, data = s.login(USER, PW)
    assert typ == "OK" and via(data[0]) == (host != MASTER), (host, data)
    assert s.select("INBOX")[0] == "OK"
    s.logout()

    # POP3S by hand: poplib checks the certificate against the address it dialled.
    raw = ctx.wrap_socket(socket.create_connection((host, 995), 20), server_hostname=NAME)
    f = raw.makefile("rb")
    assert f.readline().startswith(b"+OK")
    raw.sendall(f"USER {USER}\r\n".encode())
    assert f.readline().startswith(b"+OK")
    raw.sendall(f"PASS {PW}\r\n".encode())
    line = f.readline()
    assert line.startswith(b"+OK") and via(line) == (host != MASTER), (host, line)
    raw.sendall(b"STAT\r\n")
    assert f.readline().startswith(b"+OK")
    raw.sendall(b"QUIT\r\n")
    assert f.readline().startswith(b"+OK")
    raw.close()

others = [h for h in NODES if h != MASTER]
assert len(others) >= 2, NODES
body = f"From: {USER}\r\nSubject: secret test\r\n\r\n{MARKER}\r\n"
a = Imaps(others[0], 993, ssl_context=ctx, timeout=20)
a.login(USER, PW)
a.create("secret")
typ, data = a.append("secret", None, None, body.encode())
assert typ == "OK", data
a.logout()
b = Imaps(others[1], 993, ssl_context=ctx, timeout=20)
b.login(USER, PW)
b.select("secret")
typ, data = b.fetch("1:*", "(BODY.PEEK[TEXT])")
texts = [p[1] for p in data if isinstance(p, tuple)]
assert any(MARKER.encode() in t for t in texts), data
b.logout()
print(f"mmp_secrets: logins through {len(NODES)} nodes, message relayed and read back")

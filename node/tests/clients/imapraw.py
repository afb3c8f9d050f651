"""A raw IMAP session for the scenario scripts, shared by them: one command at a time, its
untagged lines and its tagged answer exactly as they came, so a script can assert the bytes.

Environment: IMAP_PORT, HOST (default 127.0.0.1).
"""
import os
import socket

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ["IMAP_PORT"])


class Raw:
    def __init__(self, prefix="r", strip_tag=False):
        """`prefix` starts every tag; with `strip_tag` the tagged answer comes without its
        tag (`OK …`), else whole (`r1 OK …`)."""
        self.s = socket.create_connection((HOST, PORT), timeout=20)
        self.f = self.s.makefile("rb")
        self.n = 0
        self.prefix = prefix
        self.strip_tag = strip_tag
        assert self.f.readline().startswith(b"* OK")

    def cmd(self, text):
        """Sends one command (str, sent as UTF-8, or bytes); returns the untagged lines and
        the tagged line."""
        self.n += 1
        tag = f"{self.prefix}{self.n}".encode()
        body = text if isinstance(text, bytes) else text.encode()
        self.s.sendall(tag + b" " + body + b"\r\n")
        lines = []
        while True:
            line = self.f.readline()
            assert line, f"connection closed during {text!r}"
            if line.startswith(tag + b" "):
                return lines, line[len(tag) + 1 :] if self.strip_tag else line
            lines.append(line)

    def ok(self, text):
        lines, done = self.cmd(text)
        word = done.split()[0 if self.strip_tag else 1]
        assert word == b"OK", f"{text}: {done} {lines}"
        return lines

    def status(self, text):
        """The answer's status word (OK, NO, BAD) and the tagged line."""
        lines, done = self.cmd(text)
        return done.split(b" ", 2)[0 if self.strip_tag else 1], done

    def append(self, mailbox, body):
        return self.ok(f"APPEND {mailbox} {{{len(body)}+}}\r\n{body}")

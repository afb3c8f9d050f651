"""A minimal SMTP sink for outbound TLS tests: answers EHLO (offering STARTTLS when given a
certificate), accepts every transaction, and writes each message to OUT_DIR with a first line
saying whether the session was under TLS.
Usage: tls_sink.py PORT OUT_DIR [CERT KEY]"""
import os
import socket
import ssl
import sys
import threading

PORT, OUT = int(sys.argv[1]), sys.argv[2]
CTX = None
if len(sys.argv) > 4:
    CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    CTX.load_cert_chain(sys.argv[3], sys.argv[4])
count = [0]


def session(sock):
    f = sock.makefile("rb")
    tls = False

    def say(s):
        sock.sendall((s + "\r\n").encode())

    say("220 sink ready")
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.decode(errors="replace").strip()
        verb = cmd.split(" ")[0].upper()
        if verb in ("EHLO", "HELO"):
            say("250-sink" if CTX and not tls else "250 sink")
            if CTX and not tls:
                say("250 STARTTLS")
        elif verb == "STARTTLS" and CTX and not tls:
            say("220 go ahead")
            try:
                sock = CTX.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate
            f = sock.makefile("rb")
            tls = True
        elif verb == "DATA":
            say("354 go on")
            body = b""
            while True:
                ln = f.readline()
                if not ln or ln == b".\r\n":
                    break
                body += ln
            count[0] += 1
            name = os.path.join(OUT, "%d-%d.eml" % (os.getpid(), count[0]))
            with open(name, "wb") as out:
                out.write(b"X-Sink-TLS: %s\r\n" % (b"yes" if tls else b"no") + body)
            say("250 2.0.0 stored")
        elif verb == "QUIT":
            say("221 bye")
            return
        else:
            say("250 2.0.0 ok")


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", PORT))
srv.listen(16)
while True:
    c, _ = srv.accept()
    threading.Thread(target=session, args=(c,), daemon=True).start()

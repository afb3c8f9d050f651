"""Logs in over IMAP and out (the login brings the directory's quota to the store)."""
import imaplib
import os

M = imaplib.IMAP4("127.0.0.1", int(os.environ["IMAP_PORT"]))
M.login(os.environ["USER"], os.environ["PASSWORD"])
M.logout()

"""Byte movers: how a book's bytes get from one place to another (SPEC §9).

- ``copy``: copy a book on a shared filesystem while hashing it (``copy_and_hash``); the
  client's way into staging, and the primitive that local movers build on.
- ``receive``: the server side of HTTP streaming, a file or a tar of a directory written
  into staging while it is hashed.
- ``protocol``: the interface of the asynchronous librarian-to-librarian movers (submit a
  batch, poll, cancel) and their reports.
"""

"""The Pomelo protocol, sans-IO: codecs, the handshake, signatures and both sides' state machines.

Rule: modules here take bytes and return values or events; they import nothing of Twisted, of
Autobahn or of the other layers of this package (a test enforces it), so they are tested in
memory and could serve another event loop.
"""

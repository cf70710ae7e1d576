"""The connector on Twisted: one port, TCP and WebSocket, connections, commands and limits.

Rule: this layer moves bytes between sockets and the protocol core and calls the services; it
parses no Pomelo bytes itself. It imports L{pomelo_twisted.protocol}, L{pomelo_twisted.adapters}
and L{pomelo_twisted.services}, never L{pomelo_twisted.ops} or L{pomelo_twisted.client}.
"""

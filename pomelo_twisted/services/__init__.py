"""What an application sees: its handlers (L{application}), sessions, channels, and their seams.

Rule: services know sessions and uids, never sockets; they reach a connection only through
L{interfaces.ISessionConnection}. They import L{pomelo_twisted.protocol} and nothing above it.
"""

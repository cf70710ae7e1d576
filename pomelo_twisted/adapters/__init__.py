"""Twisted and Autobahn adapters that the server and the client share (no Pomelo protocol here)."""

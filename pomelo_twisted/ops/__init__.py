"""The operator's layer: the twistd plugin and service, the pomelo-epoll reactor, metrics pages.

Rule: it assembles the layers below into a running process; nothing below imports it.
"""

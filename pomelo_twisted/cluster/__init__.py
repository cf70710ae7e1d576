"""Cluster mode: several connector processes acting as one Pomelo server, over Redis.

A layer above the services: it may import protocol, adapters and services, and only ops
imports it. Import C{pomelo_twisted.cluster.node} (L{RedisCluster}) only once the reactor is
installed: txredisapi imports the global reactor. Users' guide: docs/cluster.md.
"""

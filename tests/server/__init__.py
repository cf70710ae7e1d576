"""Tests for pomelo_twisted.server."""

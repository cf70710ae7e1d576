"""Tests for pomelo_twisted.protocol."""

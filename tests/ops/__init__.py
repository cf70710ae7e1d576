"""Tests for pomelo_twisted.ops."""

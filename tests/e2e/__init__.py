"""Tests for pomelo_twisted.e2e."""

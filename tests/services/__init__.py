"""Tests for pomelo_twisted.services."""

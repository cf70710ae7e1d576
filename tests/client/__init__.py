"""Tests for pomelo_twisted.client."""

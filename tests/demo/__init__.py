"""Tests for pomelo_twisted.demo."""

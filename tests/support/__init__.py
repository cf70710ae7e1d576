"""Shared harnesses of the test suite: imported by test modules, never a test module itself."""

"""Tests for pomelo_twisted."""

from hypothesis import HealthCheck, settings

# A deterministic profile, as Twisted's own suite uses: no deadline (timing is too noisy to
# assert on), no "too slow" health check, and derandomized so that a run never fails because
# Hypothesis happened to explore a new example today.
settings.register_profile(
    "pomelo",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("pomelo")

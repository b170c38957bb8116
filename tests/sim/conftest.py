from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI profile: no deadline (simulations vary in length), a modest number of examples.
settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", deadline=None, max_examples=150)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

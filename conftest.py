"""Root conftest: hypothesis profiles for the project's own tests.

`ci` (chosen when CI is set) is derandomised and bounded so CI runs are repeatable; pick one with HYPOTHESIS_PROFILE.
"""

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # running only the evaluation (`pytest --tagger=...`) needs no test extras
    settings = None

if settings is not None:
    settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=100, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

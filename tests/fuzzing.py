"""The fuzzers' budget: a few seconds each in `make test`, a long campaign in `make fuzz`."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

# `make fuzz` sets it (FUZZ_SCALE): every hypothesis fuzzer marked `fuzz` then draws that many
# times its examples, new ones each campaign (not derandomized), with hypothesis's database
# keeping what failed. Read, never set, here; 1 (the suite's budget) when unset.
SCALE_VARIABLE = "STREAMAGG_FUZZ_SCALE"


def campaign_scale() -> int:
    text = os.environ.get(SCALE_VARIABLE, "").strip()
    return max(1, int(text)) if text.isdigit() else 1


def fuzz_settings(max_examples: int, **kwargs: Any) -> settings:
    """``max_examples`` derandomized in the suite; ``FUZZ_SCALE`` times as many, random, in a
    campaign."""
    scale = campaign_scale()
    checks = [HealthCheck.too_slow, HealthCheck.data_too_large,
              HealthCheck.function_scoped_fixture, *kwargs.pop("suppress_health_check", [])]
    return settings(max_examples=max_examples * scale, deadline=None, derandomize=scale == 1,
                    suppress_health_check=checks, **kwargs)

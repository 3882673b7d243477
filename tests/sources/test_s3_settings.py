"""Any value of an S3 setting (STREAMAGG_S3_*): taken, or exit 2 in one short line naming it."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streamagg.errors import UsageError
from streamagg.sources.s3 import S3Storage
from streamagg.sources.s3_deadlines import DEADLINE_VARIABLE
from streamagg.sources.s3_reads import MIN_RATE_VARIABLE, SLOW_SECONDS_VARIABLE
from tests.fuzzing import fuzz_settings

HOSTILE = ["9" * 400, "9" * 400 + "TB", "1e400", "nan", "inf", "-0", "0x10", "1_0", "\u0665",
           " ", "32KB/s/s", "-1", "1e-400"]
VALUES = st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(
    exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30))


@pytest.mark.fuzz
@fuzz_settings(100)
@given(variable=st.sampled_from([DEADLINE_VARIABLE, MIN_RATE_VARIABLE, SLOW_SECONDS_VARIABLE]),
       value=VALUES)
@example(variable=MIN_RATE_VARIABLE, value="9" * 400)  # echoed whole, 400 characters
@example(variable=DEADLINE_VARIABLE, value="9" * 400)
def test_any_setting_is_taken_or_refused_in_one_short_line(variable: str, value: str) -> None:
    try:
        with pytest.MonkeyPatch.context() as patch:  # one setting an example, undone after it
            patch.setenv(variable, value)
            storage = S3Storage("s3://bucket/in", client=object())
    except UsageError as err:
        message = str(err)
        assert err.exit_code == 2 and variable in message, message
        assert "\n" not in message and len(message) < 200, message
        return
    assert 0 < storage.deadline.seconds < float("inf")
    assert storage.pace.min_rate >= 0 and 0 < storage.pace.window < float("inf")

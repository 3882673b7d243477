"""Any value of an S3 setting (STREAMAGG_S3_*): taken, or exit 2 in one short line naming it."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streamagg.errors import UsageError
from streamagg.sources import s3_client
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


@pytest.mark.parametrize("region", ["us east 1", "../x", "\u00e9", "a" * 300, "\x1b[31m", "-"])
def test_a_region_botocore_refuses_is_exit_2_in_one_short_line(
    monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREGIONTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    with pytest.raises(UsageError) as failed:
        s3_client.make_client()
    message = str(failed.value)
    assert message.startswith("invalid AWS region ") and "check AWS_REGION" in message
    assert "\n" not in message and "\x1b" not in message and len(message) < 200, message

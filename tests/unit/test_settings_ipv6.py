"""An IPv6 memcached address is a configuration error at start, not a host lookup failure in every run."""

from __future__ import annotations

import pytest

from app.core.settings import SettingsError
from app.core.settings import load_settings


@pytest.mark.parametrize("raw", ["[::1]:11211", "127.0.0.1:11211,[::1]:11212", "[fe80::1]:11211"])
def test_ipv6_memcached_address_is_refused_naming_the_variable(raw):
    with pytest.raises(SettingsError, match=r"^LISTENS_MEMCACHED has .*IPv6") as caught:
        load_settings({"LISTENS_MEMCACHED": raw})

    assert "\n" not in str(caught.value)

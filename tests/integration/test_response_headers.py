"""A served page's headers are an ordinary werkzeug Headers: hooks may copy, slice and change them."""

from __future__ import annotations

import copy

import pytest
from werkzeug.datastructures import Headers

from app import create_app
from app.warm import job
from tests.integration.test_protocol import T0
from tests.integration.test_protocol import add_members
from tests.integration.test_protocol import answer_everyone


@pytest.fixture
def stub(stub, settings, memcached):
    """The mocked Last.fm answering for alice, bob, who are members."""
    add_members(settings, "alice", "bob")
    answer_everyone(stub, T0)
    return stub


@pytest.mark.parametrize("path", ["/", "/api/internal/user-listens"])
def test_hooks_copy_slice_and_change_the_headers_of_a_page_and_of_a_304(path, settings, memcached, stub):
    assert job.run(settings, now=T0).exit_code == 0
    app = create_app(settings)
    seen = []

    @app.after_request
    def copy_and_change(response):
        # What an extension's after_request hook may do with any response.
        headers = response.headers
        copies = (copy.copy(headers), headers.copy(), headers[:], headers[1:3])
        seen.append((response.status_code, list(headers), copies))
        headers.add("X-Hook", "1")
        return response

    client = app.test_client()
    page = client.get(path)
    again = client.get(path)
    not_modified = client.get(path, headers={"If-None-Match": page.headers["ETag"]})

    assert (page.status_code, again.status_code, not_modified.status_code) == (200, 200, 304)
    for response in (page, again, not_modified):
        assert response.headers.getlist("X-Hook") == ["1"]
    assert page.data == again.data and not_modified.data == b""
    assert [status for status, _, _ in seen] == [200, 200, 304]
    for _, original, (copied, copied_again, whole, part) in seen:
        for each in (copied, copied_again, whole, part):
            assert isinstance(each, Headers)
        assert list(copied) == list(copied_again) == list(whole) == original
        assert list(part) == original[1:3]

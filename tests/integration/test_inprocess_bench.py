"""The in-process page benchmark runs end to end (a few requests, no timing asserted)."""

from __future__ import annotations

import re

import pytest

from bench import inprocess_bench


def test_inprocess_bench_serves_the_published_page_from_every_app(capsys, monkeypatch):
    # The benchmark hands the page to bench/apps.py through these; restored afterwards.
    monkeypatch.setenv("BENCH_PAGE_FILE", "")
    monkeypatch.setenv("BENCH_HEADERS_FILE", "")

    assert inprocess_bench.main(["--requests", "20", "--repeat", "1"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"in-process page benchmark, page \d+ bytes, \d+ headers, best of 1 x 20 requests", lines[0])
    rows = {name: values for name, *values in (line.split() for line in lines[2:])}
    assert list(rows) == ["listens", "constant", "constant-headers"]
    assert all(float(values[0]) > 0 for values in rows.values())
    assert rows["constant"][1] == rows["constant-headers"][2] == "1.00x"


def test_inprocess_bench_refuses_zero_requests(capsys):
    with pytest.raises(SystemExit) as exited:
        inprocess_bench.main(["--requests", "0"])

    assert exited.value.code == 2
    assert "--requests and --repeat must be at least 1" in capsys.readouterr().err

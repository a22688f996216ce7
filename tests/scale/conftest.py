"""Fixtures of the scale-out suite: one throwaway PostgreSQL for the session, a fresh database and a
fresh set of processes per test, and every process's log attached to a failing test's report.

Run:  /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/scale
      PETCAM_BIN=build/asan/petcam ASAN_OPTIONS=detect_leaks=0 ...   (another build)
"""

import pytest

import scale_harness as h


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    procs = list(getattr(item, "_scale_procs", [])) + [p for p in h.LIVE if p not in
                                                       getattr(item, "_scale_procs", [])]
    for p in procs:
        name = f"log of {p.name} ({p.role}, pid {p.pid if p.proc else '-'})"
        if any(n == name for n, _ in report.sections):
            continue
        report.sections.append((name, p.log_text()[-30000:]))


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    pg = h.Postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def cluster(request, tmp_path, postgres):
    """A Cluster on a fresh database of the session's PostgreSQL, in this test's own directory."""
    c = h.Cluster(tmp_path, postgres.database())
    request.node._scale_procs = c.procs  # the same list: processes started later are in it too
    try:
        yield c
    finally:
        c.teardown()

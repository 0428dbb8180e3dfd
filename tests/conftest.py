"""Fixtures shared by several test modules, and the rule that no skip hides under CI=true."""

import os

import pytest
import torch

# `.ci/run` sets CI=true and `make test` installs what the tests need (Java, Chromium, a C++ compiler):
# there a skipped test means a check that silently did not run, so it is reported as a failure.
CI = bool(os.environ.get("CI"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "skip_ok_in_ci(reason): this test may skip under CI=true too, for a fact of the platform "
                   "that the setup cannot change (not a tool it installs); every other skip fails under CI=true")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (CI and report.skipped) or hasattr(report, "wasxfail") or item.get_closest_marker("skip_ok_in_ci"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"CI=true but the test was skipped ({reason}); `make test` installs Java, Chromium and "
                       "a C++ compiler: see scripts/ensure_*.sh")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (`pytest.skip(..., allow_module_level=True)`) fails under CI=true too."""
    outcome = yield
    report = outcome.get_result()
    if CI and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true but {collector.nodeid} was skipped ({reason})"


@pytest.fixture
def one_thread():
    """Tiny networks run fastest, and identically from run to run, on one thread of a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Shared test set-up for the core and the integrations: offline models, fixture modules (speech, tiny CLIP, media).

At the repository root so that `integrations/*/tests` share the fixtures in `tests/fixtures/`.
"""

import os

import pytest

# A test must never wait on a model hub: every model comes from a package or is built by a fixture.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["fixtures.speech", "fixtures.tiny_clip", "fixtures.corpus", "fixtures.endpoint"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test counts as failed: a hard case skipped is a hard case not shown (the standard suites too)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} was skipped, and skips are not allowed here: {reason}"

"""Shared test set-up: offline, quiet, and a private planner cache per session."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("REELCHAIN_CACHE", tempfile.mkdtemp(prefix="reelchain-cache-"))

import pytest  # noqa: E402


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process (models stay cached between tests); returns (code, out, err)."""
    from pipelines.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run

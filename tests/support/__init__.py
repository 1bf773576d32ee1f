"""Shared helpers of the unit and integration tests (importable as `support`: pytest's
``pythonpath`` holds tests/)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout the tests run from."""

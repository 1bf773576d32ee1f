"""AZR_REQUIRE_DOCKER=1 (set by .ci/run) keeps the docker tests from vanishing.

The container's isolation checks are `docker`-marked tests; if one environment variable could
skip them all, a green CI run would prove nothing about the docker backend. Checked here
without an engine: the conftest's verdict on a skipped docker test, and with_docker.sh's on
DOCKER_TESTS=0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from support import REPO_ROOT

CONFTEST = REPO_ROOT / "tests" / "conftest.py"
WITH_DOCKER = REPO_ROOT / "deploy" / "docker" / "with_docker.sh"

PROBE_TESTS = """
import pytest

@pytest.mark.docker
def test_uses_the_engine(docker_engine):
    pass

@pytest.mark.docker
def test_skips_itself():
    pytest.skip("no image here")

@pytest.mark.docker
@pytest.mark.skipif(True, reason="a skipif")
def test_skipped_by_a_mark():
    pass

def test_not_docker():
    pytest.skip("unrelated")
"""


def run_probe(tmp_path: Path, **env: str) -> dict[str, str]:
    """Outcome per probe test, run by a pytest of its own with the project's conftest."""
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    docker: needs docker\n")
    environ = {
        k: v for k, v in os.environ.items() if k not in ("DOCKER_TESTS", "AZR_REQUIRE_DOCKER")
    }
    report = tmp_path / "report.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
         f"--junitxml={report}"],
        cwd=tmp_path,
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    outcomes = {}
    if report.exists():
        for case in ElementTree.parse(report).iter("testcase"):
            verdicts = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
            outcomes[case.get("name")] = {"skipped": "SKIPPED", "failure": "FAILED"}.get(
                verdicts[0] if verdicts else "", "ERROR" if verdicts else "PASSED"
            )
    assert outcomes, done.stdout + done.stderr
    return outcomes


def test_docker_tests_skip_when_turned_off_and_not_required(tmp_path):
    outcomes = run_probe(tmp_path, DOCKER_TESTS="0")
    assert outcomes == {
        "test_uses_the_engine": "SKIPPED",
        "test_skips_itself": "SKIPPED",
        "test_skipped_by_a_mark": "SKIPPED",
        "test_not_docker": "SKIPPED",
    }


def test_required_docker_wins_over_docker_tests_0(tmp_path):
    outcomes = run_probe(tmp_path, DOCKER_TESTS="0", AZR_REQUIRE_DOCKER="1")
    # A skip at setup (fixture, skipif mark) becomes a setup error, one in the test a failure.
    assert outcomes["test_uses_the_engine"] == "ERROR"
    assert outcomes["test_skips_itself"] == "FAILED"
    assert outcomes["test_skipped_by_a_mark"] == "ERROR"
    assert outcomes["test_not_docker"] == "SKIPPED"  # only docker tests are required


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [
        ({"DOCKER_TESTS": "0"}, 0, "ran"),
        ({"DOCKER_TESTS": "0", "AZR_REQUIRE_DOCKER": "1"}, 2, "AZR_REQUIRE_DOCKER=1 requires"),
    ],
)
def test_with_docker_refuses_to_drop_required_docker_tests(env, code, says):
    environ = {
        k: v for k, v in os.environ.items() if k not in ("DOCKER_TESTS", "AZR_REQUIRE_DOCKER")
    }
    done = subprocess.run(
        ["bash", str(WITH_DOCKER), "echo", "ran"],
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == code, done.stderr
    assert says in done.stdout + done.stderr


def test_ci_requires_the_docker_tests():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "export AZR_REQUIRE_DOCKER=1" in script
    assert script.index("export AZR_REQUIRE_DOCKER=1") < script.index("make test")

"""Observability end to end, with real parts and the path users take.

A dedicated Ray head (its own ports, temp dir and metrics export port, Ray's default logical
CPUs) runs a few self-play steps of the tiny config as a Ray job submitted through
deploy/submit.sh (`ray job submit`); a real Prometheus (Debian's package,
deploy/prometheus/install.sh) scrapes the head through a config rendered from
deploy/prometheus/prometheus.yml; then every PromQL query of the Grafana dashboard is evaluated
through Prometheus' HTTP API and must parse and return finite data. A panel querying a metric
that nobody exports fails here.

What rate() can see of a run (Ray 2.60, OpenTelemetry export, checked against real scrapes):
- a counter or histogram series is born at its first observation, carrying that observation:
  Prometheus never sees it at zero, so rate() misses the first export's increments. A query
  over rate() (histogram_quantile, a mean of _sum/_count) has data only once one series
  changed between two exports, i.e. was observed again in a later report interval;
- an actor killed at the end of the run may take its last interval's observations with it;
- a gauge is exported in the interval it is set and the metrics agent drops it 2 report
  intervals later (its TTL): it is visible for about 2 scrapes per set.
So the run has enough steps that every per-step event (learner step, weight sync, buffer
sampling ...) lands in several report intervals before the last one, and that the one
conditional event, storing new tasks (only for a step with valid proposals), recurs;
queries span the run's whole time range on a grid finer than the scrape interval; and the
checks are polled, bounded, until late exports have arrived.

Everything this module starts runs in its own session (process group); teardown stops
exactly those sessions, never `ray stop` (other people's Ray clusters share the machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from support import REPO_ROOT
from support.processes import session_members

pytestmark = pytest.mark.slow

DASHBOARD_JSON = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "azr.json"
PROMETHEUS_YML = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
VENV_BIN = Path(sys.executable).parent
SCRAPE_INTERVAL = "1s"
HEAD_START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300
SCRAPE_WAIT_S = 60
QUERY_STEP_S = 0.5  # under the 1 s scrape interval: every scraped gauge sample lies under a point
# The tiny config's own 4 steps. The buffer's add histogram (and counter) moves only in steps
# whose proposals validated: the tiny model's deduction proposals validate in every step (1 to
# 3 of 8), its abduction ones in about half. Steps 1 to 3 then each end in their own report
# intervals (a step takes seconds), which rate() needs twice per series (see above).
SELFPLAY_STEPS = 4
AGENT_WAIT_S = 90
AF_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, the last a NUL
SOCKET_PATH_TAIL = (
    "/obs-k3j9x2qa/ray/session_2026-11-25_20-45-12_345678_4194304/sockets/plasma_store"
)


def load_dashboard_builder():
    """deploy/grafana/build_dashboard.py as a module (it is a script, not a package)."""
    path = REPO_ROOT / "deploy" / "grafana" / "build_dashboard.py"
    spec = importlib.util.spec_from_file_location("azr_build_dashboard", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def http_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode() if response.status == 200 else ""


def wait_for(what: str, probe, timeout_s: float, interval_s: float = 1.0):
    """Poll `probe()` until it returns a truthy value; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error = exc
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last_error})")


def stop_session(session_id: int, also_matching: str | None = None, grace_s: float = 8.0) -> None:
    """SIGTERM, then SIGKILL, every process of one session (plus any whose command line names
    `also_matching`, e.g. our Ray temp dir): exactly what this module started."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        pids = session_members(session_id, also_matching)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and session_members(session_id, also_matching):
            time.sleep(0.5)


@dataclass
class RayHead:
    """A single-node Ray cluster of our own (`ray start --head --block` in a new session)."""

    temp_dir: Path
    dashboard_port: int = field(default_factory=free_port)
    agent_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def discovery_file(self) -> Path:
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def start(self) -> None:
        command = [
            str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
            f"--port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-port={self.dashboard_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-agent-listen-port={self.agent_port}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={self.metrics_port}",
            f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        log = (self.temp_dir.parent / f"{self.temp_dir.name}-head.log").open("w")
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(
            "the Ray dashboard",
            lambda: self._alive() and http_json(f"{self.dashboard_url}/api/version"),
            HEAD_START_TIMEOUT_S,
        )
        wait_for("Ray's service-discovery file", self.discovery_file.exists, 60)
        # Jobs go through the node's dashboard agent; submitting before it is up fails (and a
        # retried submit can lose its uploaded package), so wait for the agent's health check.
        wait_for(
            "the head node's dashboard agent",
            lambda: http_text(f"http://127.0.0.1:{self.agent_port}/api/healthz"),
            HEAD_START_TIMEOUT_S,
        )

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.temp_dir.parent / f"{self.temp_dir.name}-head.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"ray start exited with {self.process.returncode} ({log}):\n{tail}")
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop_session(self.process.pid, also_matching=str(self.temp_dir))


@dataclass
class Prometheus:
    """A Prometheus server on loopback, scraping what the Ray head's discovery file lists."""

    config: Path
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run deploy/prometheus/install.sh")
        log = (self.data_dir.parent / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for("Prometheus to be ready", lambda: self._ready(), 60)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited with {self.process.returncode}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
            return response.status == 200

    def query(self, expr: str, at: float) -> dict:
        """Instant query at time `at`; returns the API's JSON (errors included, not raised)."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        try:
            return http_json(f"{self.url}/api/v1/query?{params}")
        except urllib.error.HTTPError as exc:  # 400/422: a parse or evaluation error
            return json.loads(exc.read() or b"{}") or {"status": "error", "error": str(exc)}

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> dict:
        """Range query, as a Grafana panel runs it; returns the API's JSON (errors included)."""
        params = urllib.parse.urlencode(
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"}
        )
        try:
            return http_json(f"{self.url}/api/v1/query_range?{params}")
        except urllib.error.HTTPError as exc:  # 400/422: a parse or evaluation error
            return json.loads(exc.read() or b"{}") or {"status": "error", "error": str(exc)}

    def stop(self) -> None:
        if self.process is not None:
            stop_session(self.process.pid)


def render_prometheus_config(discovery_file: Path, out: Path) -> Path:
    """deploy/prometheus/prometheus.yml with this head's discovery file and a 1 s scrape."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL, scrape_timeout="1s"
    )
    (job,) = config["scrape_configs"]
    job["file_sd_configs"][0]["files"] = [str(discovery_file)]
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    out.write_text(yaml.safe_dump(config))
    return out


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    base = Path(os.environ.get("RAY_TMPDIR") or REPO_ROOT / ".scratch" / "ray")
    # Ray's socket paths (<dir>/obs-<8 chars>/ray/session_<date>_<pid>/sockets/plasma_store)
    # must fit AF_UNIX's 107 bytes; a deep checkout (CI clones under /check/...) leaves too
    # little room under .scratch, so the head's directory moves to /tmp there.
    if len(str(base)) + len(SOCKET_PATH_TAIL) > AF_UNIX_PATH_MAX:
        base = Path("/tmp/azr-obs")
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="obs-", dir=base))
    yield path
    if os.environ.get("AZR_KEEP_OBS_DIR") == "1":  # logs, run dir, Prometheus data: debugging
        print(f"kept {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def head_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="disabled",  # this private loopback head only; clusters use tokens
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `azr` entry point
        RAY_USAGE_STATS_ENABLED="0",
        # Export metrics every second (default 10 s): each step's increments then reach
        # Prometheus in their own report interval, which rate() needs.
        RAY_metrics_report_interval_ms="1000",
    )
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def ray_head(workdir: Path, head_env: dict[str, str]) -> Iterator[RayHead]:
    head = RayHead(temp_dir=workdir / "ray", env=head_env)
    head.temp_dir.mkdir()
    try:
        head.start()
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def prometheus(ray_head: RayHead, workdir: Path) -> Iterator[Prometheus]:
    config = render_prometheus_config(ray_head.discovery_file, workdir / "prometheus.yml")
    server = Prometheus(config=config, data_dir=workdir / "prometheus-data")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tiny_model_dir() -> Path:
    """The tiny model of configs/tiny.yaml, built here (or taken from the shared cache).

    The job gets it as `model.path`: the job runs in a temporary copy of the repository, where
    the tiny model's default data path does not exist, and building it there would count
    minutes of warm start against the job.
    """
    from azr.config import load_config
    from azr.models import ensure_model

    if os.environ.get("AZR_TINY_MODEL_DIR"):  # a prebuilt model (CI can build it once, first)
        return Path(os.environ["AZR_TINY_MODEL_DIR"]).resolve()
    cache = REPO_ROOT / ".scratch" / "models"
    config = load_config(REPO_ROOT / "configs" / "tiny.yaml", [f"model.cache_dir={cache}"])
    return Path(ensure_model(config.model)).resolve()


def submit_tiny_run(head: RayHead, model_dir: Path, output_dir: Path) -> str:
    """SELFPLAY_STEPS steps of configs/tiny.yaml as a Ray job, through deploy/submit.sh.

    No data or CPU overrides: the job reads the repo's own CRUXEval file and its actors fit
    the head's default logical CPUs.
    """
    job_id = f"azr-obs-{uuid.uuid4().hex[:8]}"
    # Paths become absolute: the job runs in a temporary copy of the repository.
    overrides = [
        f"selfplay.steps={SELFPLAY_STEPS}",
        "selfplay.eval_every=1",
        "selfplay.eval_size=8",
        f"model.path={model_dir}",
        f"output_dir={output_dir}",
        "run_name=observability",
    ]
    env = dict(
        head.env, RAY_ADDRESS=head.dashboard_url, AZR_JOB_ID=job_id, RAY=str(VENV_BIN / "ray")
    )
    command = [str(REPO_ROOT / "deploy" / "submit.sh"), "--no-wait", "configs/tiny.yaml"]

    def submit() -> subprocess.CompletedProcess | None:
        done = subprocess.run(
            [*command, *overrides],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        # The head answers before its node's dashboard agent registered: Ray says to retry.
        return None if "No available agent" in done.stderr else done

    done = wait_for("the head to accept jobs", submit, AGENT_WAIT_S, interval_s=3.0)
    assert done.returncode == 0, f"submit.sh failed:\n{done.stdout}\n{done.stderr}"
    return job_id


def job_logs(head: RayHead, job_id: str, tail_chars: int = 6000) -> str:
    try:
        return http_json(f"{head.dashboard_url}/api/jobs/{job_id}/logs").get("logs", "")[
            -tail_chars:
        ]
    except (OSError, ValueError) as exc:
        return f"(logs unavailable: {exc})"


def wait_for_job(head: RayHead, job_id: str) -> None:
    terminal = {"SUCCEEDED", "FAILED", "STOPPED"}
    deadline = time.monotonic() + JOB_TIMEOUT_S
    info: dict = {}
    while time.monotonic() < deadline:
        info = http_json(f"{head.dashboard_url}/api/jobs/{job_id}")
        if info["status"] in terminal:
            break
        time.sleep(3.0)
    if info.get("status") != "SUCCEEDED":
        pytest.fail(
            f"job {job_id} {info.get('status')} after {JOB_TIMEOUT_S}s: {info.get('message')}\n"
            + job_logs(head, job_id)
        )


def sample_window(
    prom: Prometheus, series: str, now: float, lookback_s: int
) -> tuple[float, float]:
    """(first, last) sample time of any series named `series` within the lookback."""
    result = prom.query(f"{series}[{lookback_s}s]", now)
    assert result.get("status") == "success", result
    stamps = [float(t) for s in result["data"]["result"] for t, _ in s["values"]]
    return (min(stamps), max(stamps)) if stamps else (math.inf, -math.inf)


def storing_steps(run_dir: Path) -> dict[str, int]:
    """Steps of the run (its metrics.jsonl) in which each task type stored new tasks."""
    counts: dict[str, int] = {}
    log = run_dir / "metrics.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        for key, value in json.loads(line).items():
            task, _, rest = key.partition("/")
            if rest == "propose/outcome/valid" and value > 0:
                counts[task] = counts.get(task, 0) + 1
    return counts


@dataclass
class DashboardCheck:
    """One pass over the dashboard against Prometheus: what is missing or without data."""

    queries: int = 0
    missing: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.queries > 0 and not self.missing and not self.failures


def check_dashboard(builder, prom: Prometheus, started: float, lookback_s: int) -> DashboardCheck:
    now = time.time()
    check = DashboardCheck()
    # Every metric the dashboard reads must have been exported; event counters (timeouts,
    # evictions ...) only after their first event, and their panels fall back to 0.
    for metric in builder.METRICS.values():
        series = metric.series + ("_count" if metric.kind == "histogram" else "")
        first, last = sample_window(prom, series, now, lookback_s)
        if first > last and not metric.event:
            check.missing.append(series)

    # Every panel query over the run, as Grafana evaluates a panel (a range query), with
    # Grafana's variables replaced: each must parse and give finite values at some point.
    # $__rate_interval and $__range span the whole run (from before the submission on), so
    # the run's last points see every increment it exported: no rate window depends on how
    # many scrapes fell into it. The grid is finer than the scrape interval, so a gauge
    # sample (visible ~2 scrapes per set) is never stepped over.
    whole_run = f"{math.ceil(now - started)}s"
    for panel in json.loads(DASHBOARD_JSON.read_text())["panels"]:
        for target in panel.get("targets", []):
            check.queries += 1
            expr = target["expr"].replace("$__rate_interval", whole_run)
            expr = expr.replace("$__range", whole_run)
            answer = prom.query_range(expr, started, now, step_s=QUERY_STEP_S)
            where = f"{panel['title']} [{target['refId']}]"
            if answer.get("status") != "success":
                check.failures.append(f"{where}: {answer.get('error')}")
                continue
            values = [float(v) for s in answer["data"]["result"] for _, v in s["values"]]
            if not values:
                check.failures.append(f"{where}: no data for {expr}")
            elif not any(math.isfinite(v) for v in values):
                check.failures.append(f"{where}: only NaN/Inf for {expr}")
    return check


# A cold model cache adds the tiny model's build (warm start capped at 300 s) to the run.
@pytest.mark.timeout(1500)
def test_every_dashboard_query_returns_data_from_a_real_run(
    tiny_model_dir, ray_head, prometheus, workdir
):
    builder = load_dashboard_builder()
    started = time.time()
    job_id = submit_tiny_run(ray_head, tiny_model_dir, workdir / "runs")
    wait_for_job(ray_head, job_id)
    lookback = int(time.time() - started) + 120

    # Counters and histograms stay in Ray's metrics agent after their actors are gone: poll
    # (bounded) until the last report intervals' exports have been scraped and every check
    # holds; a check that still fails at the deadline fails the test.
    deadline = time.monotonic() + SCRAPE_WAIT_S
    check = check_dashboard(builder, prometheus, started, lookback)
    while not check.ok and time.monotonic() < deadline:
        time.sleep(2.0)
        check = check_dashboard(builder, prometheus, started, lookback)
    assert check.queries >= 40
    assert check.ok, (
        f"after {SCRAPE_WAIT_S}s of polling:\n"
        f"metrics the dashboard queries but nothing exported: {check.missing}\n"
        "dashboard queries without data:\n" + "\n".join(check.failures) + "\n"
        # rate() of the buffer's adds needs new tasks stored in two steps (module docstring)
        f"steps that stored new tasks, per task type: {storing_steps(workdir / 'runs' / 'observability')}"
    )

"""The reference DAG's trigger form in a real browser, on `make airflow`'s stack.

Starts ``python -m scalingo_staging_sync.testing.demo --standalone`` (what ``make airflow`` runs:
embedded PostgreSQL production and staging, the fake Scalingo API, ``airflow standalone``) in its own
process group, logs in with the documented credentials (user ``admin``, password in
``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``) with headless Chromium (Debian's
``chromium`` package) driven by Playwright's Python API, checks that every param of the DAG shows its
title and description, triggers a dry run from the form, waits for the run to succeed, and saves
screenshots in the test's tmp dir. The whole process group is stopped with SIGTERM in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "scalingo_staging_sync"
TARGET_APP = "chinook-staging"  # scalingo_staging_sync.testing.sandbox.TARGET_APP
# A cron whose latest past tick is before the DAG's start_date (next: 29 Feb 2028): no scheduled run
# starts while the test triggers its own.
NO_SCHEDULED_RUN = "0 0 29 2 *"
START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def chromium_path() -> str:
    for candidate in (
        os.environ.get("CHROMIUM_PATH"),
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "Chromium not found: install Debian's package (`apt-get install chromium`, done by .ci/run) "
        "or set CHROMIUM_PATH; Playwright cannot download its own browsers here"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]  # (get_dag would read the metadata database)


def expected_params(dag) -> dict[str, dict]:
    """key -> {title, description, section}, read from the DAG itself (title: the param name when the
    Param has none, as the form shows it)."""
    out = {}
    for key in dag.params:
        param = dag.params.get_param(key)
        schema = param.schema or {}
        out[key] = {
            "title": schema.get("title") or key,
            "description": param.description or schema.get("description") or "",
            "section": schema.get("section"),
        }
    return out


DEFAULT_SECTION = "Run Parameters"  # the form's section for params without one


def param_field(page, dialog, param: dict):
    """The form field of ``param``, found by its title, in its section (opened first: the form's
    sections are accordions, one open at a time). Fails unless exactly one visible field has the title."""
    from playwright.sync_api import expect

    section = param["section"] or DEFAULT_SECTION
    trigger = dialog.locator('[data-part="item-trigger"]').filter(
        has_text=re.compile(rf"^\s*{re.escape(section)}\s*$")
    )
    expect(trigger, f"section {section!r} on the form").to_have_count(1)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    expect(trigger).to_have_attribute("aria-expanded", "true")
    label = page.locator(
        '[data-part="label"]', has_text=re.compile(rf"^\s*{re.escape(param['title'])}\s*\*?\s*$")
    )
    field = dialog.locator('[data-scope="field"][data-part="root"]').filter(has=label)
    expect(field, f"a field titled {param['title']!r}").to_have_count(1)
    expect(field.locator('[data-part="label"]').first).to_be_visible()
    return field


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _tree(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


class Stack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.log_path = base / "make-airflow.log"
        self.proc: subprocess.Popen | None = None
        self.airflow_home: Path | None = None
        self.known: dict[int, object] = {}
        self._token: str | None = None
        self.started_s = 0.0

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "SCALINGO_STAGING_SYNC_", "PYTEST"))
        }
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "provider"), env.get("PYTHONPATH")])),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "SCALINGO_STAGING_SYNC_SCHEDULE": NO_SCHEDULED_RUN,
                "AIRFLOW__SCALINGO_STAGING_SYNC__SCHEDULE": NO_SCHEDULED_RUN,
            }
        )
        return env

    def start(self) -> None:
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scalingo_staging_sync.testing.demo", "--standalone"],
            cwd=ROOT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
        log.close()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""

    def wait_healthy(self) -> None:
        started = time.monotonic()
        deadline = started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._remember()
            if self.proc.poll() is not None:
                pytest.fail(f"make airflow's stack exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self.airflow_home is None:
                match = re.search(r"AIRFLOW_HOME=([^)\s]+)\)", self.log_tail(400))
                if match:
                    self.airflow_home = Path(match.group(1))
            try:
                health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
                if all(health.get(c, {}).get("status") == "healthy" for c in components):
                    if self.password() is not None and self._dag_parsed():
                        self.started_s = time.monotonic() - started
                        return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(1)
        pytest.fail(f"make airflow's stack not healthy after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def password(self) -> str | None:
        """The documented credentials: user admin, password in the generated file of AIRFLOW_HOME."""
        if self.airflow_home is None:
            return None
        try:
            return json.loads(
                (self.airflow_home / "simple_auth_manager_passwords.json.generated").read_text()
            )["admin"]
        except (OSError, ValueError, KeyError):
            return None

    def token(self) -> str:
        if self._token is None:
            response = requests.post(
                f"{self.url}/auth/token", json={"username": "admin", "password": self.password()}, timeout=60
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, path: str) -> dict:
        response = requests.get(
            f"{self.url}/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=60
        )
        response.raise_for_status()
        return response.json()

    def _dag_parsed(self) -> bool:
        try:
            return self.api(f"/dags/{DAG_ID}")["dag_id"] == DAG_ID
        except requests.RequestException:
            return False

    def _remember(self) -> None:
        if self.proc is not None:
            for child in _tree(self.proc.pid):
                self.known[child.pid] = child

    def alive(self) -> list:
        import psutil

        out = []
        for p in self.known.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def base_dir(self) -> Path | None:
        """The demo's temporary directory (embedded databases, fake API, AIRFLOW_HOME live under it)."""
        return self.airflow_home.parent if self.airflow_home else None

    def processes_of_base(self) -> list:
        """Processes whose command line names the demo's directory (the embedded PostgreSQL servers
        daemonize, so they are not in the process tree)."""
        import psutil

        base = self.base_dir()
        out = []
        if base is None:
            return out
        for p in psutil.process_iter(["cmdline", "status"]):
            try:
                if p.info["status"] != psutil.STATUS_ZOMBIE and str(base) in " ".join(
                    p.info["cmdline"] or []
                ):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def rss_mib(self) -> float:
        """Memory of the whole stack (tree + embedded databases): proportional set size, MiB (shared
        pages of forked workers counted once)."""
        import psutil

        procs = {p.pid: p for p in [*self.alive(), *self.processes_of_base()]}
        total = 0
        for p in procs.values():
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        return total / 1024**2

    def stop(self) -> None:
        """SIGTERM to the group (the demo then stops airflow's own group, the databases and the fake
        API); anything of the tree still alive after that is killed."""
        import psutil

        if self.proc is None:
            return
        self._remember()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
        leftovers = self.alive()
        _, alive = psutil.wait_procs(leftovers, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("make-airflow"))
    try:
        stack.start()
        stack.wait_healthy()
        yield stack
    finally:
        stack.stop()
        assert not stack.alive(), f"processes left behind: {stack.alive()}"
        assert not stack.processes_of_base(), f"processes left behind: {stack.processes_of_base()}"


def test_trigger_form_titles_descriptions_and_a_dry_run(stack, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    dag = load_dag()
    params = expected_params(dag)
    assert {"dry_run", "target_app", "backup"} <= set(params)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)

            # log in
            page.goto(f"{stack.url}/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(stack.password())
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))

            # the trigger form
            page.goto(f"{stack.url}/dags/{DAG_ID}")
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Trigger Dag")).to_be_visible()
            for key, param in params.items():
                field = param_field(page, dialog, param)
                helper = field.locator('[data-part="helper-text"]').first
                expect(helper, f"description of param {key}").to_have_text(_norm(param["description"]))

            # a dry run: dry_run checked, the staging app typed in
            field = param_field(page, dialog, params["dry_run"])
            switch = field.locator('label[data-scope="switch"]')
            if switch.get_attribute("data-state") != "checked":
                switch.click()
            expect(field.locator('input[type="checkbox"]')).to_be_checked()
            param_field(page, dialog, params["target_app"]).locator("input").fill(TARGET_APP)
            # the reference rules set require_confirmation. main's gate still asks it of a dry run; the
            # preflight gate of issue 12 does not (then this line can go, and the run must still succeed)
            param_field(page, dialog, params["confirm_target"]).locator("input").fill(TARGET_APP)
            field.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "trigger-form.png"))
            dialog.get_by_role("button", name="Trigger", exact=True).click()
            expect(dialog).to_be_hidden()

            run = wait_for_manual_run(stack)
            assert run["state"] == "success", run
            assert run["conf"]["dry_run"] is True and run["conf"]["target_app"] == TARGET_APP, run["conf"]

            # the run as the UI shows it
            page.goto(f"{stack.url}/dags/{DAG_ID}/runs/{run['dag_run_id']}")
            expect(page.get_by_text(run["dag_run_id"]).first).to_be_visible()
            page.wait_for_timeout(1500)
            shot = tmp_path / "dry-run-succeeded.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            stack._remember()
            print(
                f"screenshots: {tmp_path / 'trigger-form.png'} {shot}; stack PSS {stack.rss_mib():.0f} MiB, healthy after {stack.started_s:.0f} s"
            )
        finally:
            browser.close()

    tasks = {
        t["task_id"]: t["state"]
        for t in stack.api(f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    }
    gate = next(k for k in tasks if "gate" in k)
    assert tasks[gate] == "success", tasks
    # a dry run changes nothing: it only reads (fetches and plans the archive, then stops before the
    # restore); every other task is skipped, except the teardowns (cleanup, audit)
    teardowns = {t.task_id for t in dag.tasks if t.is_teardown}
    assert teardowns and all(tasks[t] == "success" for t in teardowns), tasks
    read_only = {"fetch_backup", "plan_anonymization", "dry_run_stop"}
    assert all(tasks[t] == "success" for t in read_only), tasks
    ran = [
        k
        for k, s in tasks.items()
        if k != gate and k not in teardowns | read_only and s not in ("skipped", None)
    ]
    assert not ran, tasks


def wait_for_manual_run(stack: Stack) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    run: dict = {}
    while time.monotonic() < deadline:
        try:
            runs = stack.api(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
        except requests.RequestException:  # a busy api-server on a loaded machine: ask again
            time.sleep(2)
            continue
        runs = [r for r in runs if r["run_type"] == "manual"]
        assert len(runs) <= 1, runs
        if runs:
            run = runs[0]
            if run["state"] in ("success", "failed"):
                return run
        time.sleep(2)
    pytest.fail(f"the dry run did not finish in {RUN_TIMEOUT_S} s: {run}\n{stack.log_tail()}")

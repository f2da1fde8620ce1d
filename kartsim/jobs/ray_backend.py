"""The ``ray`` backend: a job is a Ray job (Ray Jobs API, `ray.job_submission.JobSubmissionClient`)
on the cluster whose dashboard is at ``--address`` (e.g. ``http://127.0.0.1:8265``).

* Code and tracks travel with the job: the installed ``kartsim`` package goes as a ``py_modules``
  entry (so the cluster runs this exact code; its Python needs kartsim's dependencies: numpy,
  numba, torch, stable-baselines3, ...), and the job's synced tracks as the ``working_dir``.
* The entrypoint is the job wrapper (`kartsim.jobs.runner`) writing to the job store given with
  ``--storage`` (a folder all nodes and this machine see, or an fsspec URI such as
  ``s3://bucket/kartsim``): checkpoints, TensorBoard logs, telemetry, the final model, the log.
* When the cluster has GPUs the job asks for one (``entrypoint_num_gpus``) and training's
  ``--device auto`` uses it; ``--num-gpus`` / ``--num-cpus`` set the request explicitly.
* Its state is Ray's, refined by the wrapper's exit file (the reason); a job Ray no longer knows
  (cluster restarted) is failed, and `resume` starts it again from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kartsim.jobs.config import Settings
from kartsim.jobs.store import Attempt, JobError, JobRecord, JobState, Store, cancel_rel, exit_rel, now_iso

RAY_EXCLUDES = ["__pycache__", "*.pyc", ".venv", "runs", "models", "kartsim-jobs", ".git"]


def _import_ray():
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient
    except ImportError:
        raise JobError("the ray backend needs Ray: install it with `pip install 'kartsim[ray]'` "
                       "(in a checkout: `pip install -e '.[ray]'`)") from None
    return JobSubmissionClient, JobStatus


# A head that has just started answers HTTP before its job agent has registered; Ray says so and asks
# to try again, so a submission right after `ray start` waits for the agent instead of failing.
_NO_AGENT = "No available agent"
AGENT_WAIT_S = 60.0


def submit_job(client: Any, **kwargs: Any) -> str:
    """``client.submit_job(**kwargs)``, retried while the cluster has no job agent yet (up to
    `AGENT_WAIT_S`); any other refusal is raised at once."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as exc:
            if _NO_AGENT not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def unreachable(address: str) -> JobError:
    return JobError(f"cannot reach a Ray cluster at {address}: start one with "
                    "`ray start --head --dashboard-host 127.0.0.1` or check --address")


class RayBackend:
    name = "ray"

    def __init__(self, store: Store, address: str, settings: Settings | None = None, timeout_s: float = 5.0) -> None:
        self.client_cls, _ = _import_ray()
        self.store = store
        self.address = address
        self.settings = settings or Settings()
        self.timeout_s = timeout_s
        self._client = None

    # --------------------------------------------------------------------------------- cluster

    def check(self) -> None:
        """JobError (one line) unless a Ray dashboard answers at the address, quickly."""
        try:
            with urllib.request.urlopen(f"{self.address}/api/version", timeout=self.timeout_s) as resp:
                info = json.loads(resp.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            raise unreachable(self.address) from None
        if not isinstance(info, dict) or "ray_version" not in info:
            raise JobError(f"{self.address} answers but is not a Ray dashboard; check --address")

    @property
    def client(self):
        if self._client is None:
            self.check()
            try:
                self._client = self.client_cls(self.address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise JobError(f"{unreachable(self.address)} ({exc})") from None
        return self._client

    def cluster_gpus(self) -> float:
        """GPUs of the cluster's alive nodes (0 when it cannot be told)."""
        try:
            from ray.util.state import list_nodes

            nodes = list_nodes(address=self.address, timeout=int(self.timeout_s) + 5, raise_on_missing_output=False)
            return float(sum((n.resources_total or {}).get("GPU", 0.0) for n in nodes if n.state == "ALIVE"))
        except Exception:
            return 0.0

    def describe(self, job: JobRecord) -> str:
        sub = job.attempt.submission_id if job.attempts else None
        return f"ray at {self.address}" + (f", submission {sub}" if sub else "")

    # ---------------------------------------------------------------------------------- launch

    def launch(self, job: JobRecord, attempt: Attempt) -> None:
        from kartsim.jobs.tracks import stage_tracks
        import kartsim

        client = self.client
        opts = dict(job.options)
        num_gpus = opts.get("num_gpus")
        if num_gpus is None:
            num_gpus = 1.0 if self.cluster_gpus() > 0 else 0.0
        elif num_gpus > 0 and self.cluster_gpus() < num_gpus:
            print(f"warning: the Ray cluster at {self.address} has fewer than {num_gpus:g} GPU(s) now; the job "
                  "stays pending until a node with GPUs joins (drop --num-gpus to train on CPU)", file=sys.stderr)
        num_cpus = opts.get("num_cpus")
        sub_id = job.id if attempt.n == 1 else f"{job.id}-{attempt.n}"
        entrypoint = shlex.join(["python", "-u", "-m", "kartsim.jobs.runner", "--store", self.store.location,
                                 "--job", job.id, "--attempt", str(attempt.n), "--tracks-dir", ".", "--tee"])
        with tempfile.TemporaryDirectory(prefix="kartsim-ray-") as tmp:
            staging = Path(tmp)
            stage_tracks(self.store, job.tracks, staging)
            (staging / "kartsim-job.json").write_text(json.dumps({"job": job.id, "attempt": attempt.n}))
            runtime_env = {
                "working_dir": str(staging),
                "py_modules": [str(Path(kartsim.__file__).parent)],
                "excludes": RAY_EXCLUDES,
                "env_vars": {"PYTHONUNBUFFERED": "1"},
            }
            kwargs: dict[str, Any] = {}
            if num_gpus:
                kwargs["entrypoint_num_gpus"] = float(num_gpus)
            if num_cpus:
                kwargs["entrypoint_num_cpus"] = float(num_cpus)
            # no "Uploading package ..." INFO lines on the user's terminal: they reach Ray's handlers
            quiet = [logging.getLogger(n) for n in ("ray.dashboard.modules.dashboard_sdk",
                                                    "ray._private.runtime_env.packaging")]
            quiet += [h for h in logging.getLogger("ray").handlers]
            levels = [q.level for q in quiet]
            for q in quiet:
                q.setLevel(logging.WARNING)
            try:
                submit_job(client, entrypoint=entrypoint, submission_id=sub_id, runtime_env=runtime_env,
                           metadata={"kartsim_job": job.id, "attempt": str(attempt.n)}, **kwargs)
            except (ConnectionError, OSError) as exc:
                raise JobError(f"{unreachable(self.address)} ({exc})") from None
            except RuntimeError as exc:
                raise JobError(f"Ray refused the job: {str(exc).splitlines()[0][:300]}") from None
            finally:
                for q, level in zip(quiet, levels):
                    q.setLevel(level)
        attempt.submission_id = sub_id
        job.options["num_gpus_used"] = float(num_gpus)

    # ----------------------------------------------------------------------------------- state

    def _info(self, sub_id: str):
        try:
            return self.client.get_job_info(sub_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc) or "not found" in str(exc).lower():
                return None
            raise JobError(f"Ray at {self.address} could not tell the job's state: {str(exc).splitlines()[0][:200]}") from None
        except (ConnectionError, OSError):
            raise unreachable(self.address) from None

    def state(self, job: JobRecord) -> JobState:
        a = job.attempt
        ex = self.store.read_json(exit_rel(job.id, a.n))
        info = self._info(a.submission_id) if a.submission_id else None
        if info is None:
            if isinstance(ex, dict):
                return JobState.from_exit(ex)
            return JobState("failed", f"the Ray cluster at {self.address} has no record of this job "
                                      "(restarted or lost?)")
        status = str(getattr(info.status, "value", info.status))
        message = (info.message or "").strip().splitlines()[0][:300] if info.message else ""
        if status == "PENDING":
            return JobState("pending", message)
        if status == "RUNNING":
            cancelling = self.store.exists(cancel_rel(job.id, a.n))
            return JobState("running", "cancel requested, stopping" if cancelling else "")
        if isinstance(ex, dict):
            return JobState.from_exit(ex)
        if status == "SUCCEEDED":
            return JobState("succeeded", "finished", 0)
        if status == "STOPPED":
            return JobState("cancelled", "stopped on the Ray cluster", info.driver_exit_code)
        # FAILED without an exit file: the wrapper itself died (killed, node lost, runtime env failed)
        return JobState("failed", f"process died (killed? node lost?): {message}" if message else
                        "process died (killed? node lost?)", getattr(info, "driver_exit_code", None))

    def cancel(self, job: JobRecord, grace_s: float = 60.0) -> JobState:
        """Ask the wrapper to stop training (SIGINT: an _interrupted checkpoint is saved); after
        `grace_s` without an end (or while still pending), stop the Ray job."""
        a = job.attempt
        self.store.write_text(cancel_rel(job.id, a.n), now_iso() + "\n")
        st = self.state(job)
        deadline = time.monotonic() + (grace_s if st.state == "running" else 0.0)
        while not st.terminal and time.monotonic() < deadline:
            time.sleep(0.5)
            st = self.state(job)
        if not st.terminal and a.submission_id:
            try:
                self.client.stop_job(a.submission_id)
            except RuntimeError:
                pass
            end = time.monotonic() + 15
            while not st.terminal and time.monotonic() < end:
                time.sleep(0.5)
                st = self.state(job)
        return st

"""The training process of a job: ``python -m kartsim.jobs.worker --progress-file F --config JSON``.

``JSON`` is the job's train settings, {dotted TrainConfig path: value} (the job record's ``config``
plus the attempt's folders and resume). It is `kartsim train` (same config, same
`kartsim.rl.train.train`) plus a callback that writes
``progress.json`` and prints a progress line every few seconds (a progress bar makes no sense in a
log file). SIGTERM (Ray stopping the job, ``kill``) is handled like Ctrl-C: train saves
``checkpoints/<name>_interrupted.zip`` and exits with 130. So is the death of the job's wrapper
(`kartsim.jobs.runner`, ``KARTSIM_JOB_RUNNER_PID``): no orphaned trainer keeps writing the run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kartsim.telemetry.devices import sample_text


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def progress_line(p: dict[str, Any], eta: bool = True) -> str:
    done, total = int(p.get("num_timesteps", 0)), int(p.get("total_timesteps") or 0)
    # PPO stops after whole rollouts, a little past the total: that is done (100%), not 102%.
    pct = f" ({min(100.0, 100.0 * done / total):.0f}%)" if total else ""
    parts = [f"{done:,} / {total:,} steps{pct}" if total else f"{done:,} steps"]
    if p.get("steps_per_second"):
        parts.append(f"{p['steps_per_second']:,.0f} steps/s")
    if eta and p.get("eta_s") is not None and done < total:
        parts.append(f"ETA {_fmt_duration(p['eta_s'])}")
    usage = sample_text(p.get("utilisation")) if eta else None  # while it runs: how busy the device is
    if usage:
        parts.append(usage)
    return ", ".join(parts)


def make_progress_callback(path: Path, every_s: float = 10.0, write_every_s: float = 2.0):
    from stable_baselines3.common.callbacks import BaseCallback

    class ProgressFile(BaseCallback):
        """Writes {num_timesteps, total_timesteps, steps_per_second, eta_s, updated} to `path`."""

        def _on_training_start(self) -> None:
            from kartsim.telemetry.devices import DeviceMonitor

            self._monitor = DeviceMonitor(str(self.model.device))
            self._t0 = time.monotonic()
            self._steps0 = self.model.num_timesteps
            self._next_write = 0.0
            self._next_print = time.monotonic() + every_s
            self._started = False
            self._write(final=False)

        def _on_step(self) -> bool:
            now = time.monotonic()
            if not self._started:  # rate and ETA from the first step on (after JIT compilation, env setup)
                self._started = True
                self._t0, self._steps0 = now, self.model.num_timesteps
                self._next_print = now + every_s
            if now >= self._next_write:
                self._next_write = now + write_every_s
                data = self._write(final=False)
                if now >= self._next_print:
                    self._next_print = now + every_s
                    print(f"[progress] {progress_line(data)}", flush=True)
            return True

        def _write(self, final: bool) -> dict[str, Any]:
            elapsed = time.monotonic() - self._t0
            done = int(self.model.num_timesteps)
            total = int(getattr(self.model, "_total_timesteps", 0) or 0)
            rate = (done - self._steps0) / elapsed if elapsed > 0 else 0.0
            data = {"num_timesteps": done, "total_timesteps": total, "steps_per_second": round(rate, 1),
                    "eta_s": round((total - done) / rate, 1) if rate > 0 and total > done else None,
                    "elapsed_s": round(elapsed, 1), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "final": final}
            sample = None if final else self._monitor.sample()  # every write_every_s: the CPU share spans it
            if sample is not None:
                data["utilisation"] = sample.to_dict()
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(data))
                os.replace(tmp, path)
            except OSError:
                pass
            return data

        def _on_training_end(self) -> None:
            data = self._write(final=True)
            print(f"[progress] {progress_line(data, eta=False)}", flush=True)

    return ProgressFile()


def stop_when_orphaned(runner_pid: int, poll_s: float = 0.5) -> threading.Thread:
    """SIGTERM this process (train saves and stops) once its parent is no longer `runner_pid`: the
    wrapper was killed, and a resume would otherwise start a second trainer beside this one."""

    def watch() -> None:
        while os.getppid() == runner_pid:
            time.sleep(poll_s)
        print("[job] the job's wrapper died: stopping training", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    from kartsim.rl.train_cmd import config_from_values
    from kartsim.errors import KartsimError

    parser = argparse.ArgumentParser(prog="kartsim.jobs.worker")
    parser.add_argument("--progress-file", type=Path, required=True)
    parser.add_argument("--config", type=json.loads, required=True, help="the train settings, {dotted path: value}")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    progress_file = args.progress_file

    def on_term(signum, frame):  # Ray's stop / kill: save a checkpoint like Ctrl-C does
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if os.environ.get("KARTSIM_JOB_RUNNER_PID", "").isdigit():
        stop_when_orphaned(int(os.environ["KARTSIM_JOB_RUNNER_PID"]))
    try:
        from kartsim.rl.train import train

        cfg, given = config_from_values(args.config)
        progress = make_progress_callback(progress_file)
        result = train(cfg, given=given, callbacks=[progress], echo=lambda s: print(s, flush=True))
        if result.interrupted and getattr(progress, "model", None) is not None:
            progress._write(final=True)  # SB3 skips _on_training_end on an interrupt
        return 130 if result.interrupted else 0
    except KartsimError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Training jobs (the guide's Remote Training steps, run here instead of Modal): train in the background on this machine or on a Ray cluster, then fetch the results.

``kartsim jobs ACTION`` and ``python tools/track_cli.py ACTION`` are the same commands::

    sync --track-name circuit.png            check a track, store it + its checkpoints for jobs
    train [kartsim train flags] [--detach]   start a job (without --detach: stream its log to the end)
    status [JOB] [--wait]                    state, progress, checkpoints of a job (default: the latest)
    list                                     recent jobs
    logs JOB [--follow]                      the job's output
    cancel JOB                               stop it (it saves an _interrupted checkpoint)
    resume JOB [--timesteps N]               start it again from its last checkpoint
    fetch --path NAME [--out FILE] [--force] copy a model / checkpoint / telemetry CSV / tb folder here

Backend, job store and Ray address: flags, else KARTSIM_JOBS_BACKEND / KARTSIM_JOB_STORE /
KARTSIM_RAY_ADDRESS, else ./kartsim-jobs.json or ~/.config/kartsim/jobs.json (see kartsim.jobs.config).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable

from kartsim.errors import KartsimError

KARTSIM_PROG = "kartsim jobs"
# What each backend is, in the words of the guide's "Remote Training (Modal)" section: kartsim runs
# the same commands on these instead of Modal.
BACKEND_WORDS = {
    "local": "local = a background process on this machine (the guide's Modal steps run here the same way; "
             "--backend ray sends them to a Ray cluster)",
    "ray": "ray = a job on a Ray cluster (the guide's Modal steps run there the same way)",
}
TRAIN_DESCRIPTION = (
    "Start a training job: every `kartsim train` flag, plus --detach. This is the guide's \"Remote Training "
    "(Modal)\" step: kartsim runs it on the local backend (a background process on this machine, the default) "
    "or on a Ray cluster (--backend ray), not on Modal. Monitor it with `status` (steps/s, ETA, GPU/CPU use), "
    "`kartsim dashboard` and TensorBoard (--tensorboard); `fetch` brings the model here.")
SHIM_PROG = "python tools/track_cli.py"


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _add_common(p: argparse.ArgumentParser, ray_resources: bool = False) -> None:
    g = p.add_argument_group("backend and job store")
    g.add_argument("--backend", choices=["local", "ray"],
                   help="where jobs run: local (default; a background process here) or ray (a Ray cluster)")
    g.add_argument("--store", "--storage", dest="store", metavar="PATH_OR_URI",
                   help="job store: tracks, logs, checkpoints, models (default ./kartsim-jobs; for ray a folder "
                        "all nodes see, or s3://... etc.)")
    g.add_argument("--address", metavar="URL",
                   help="Ray dashboard address for --backend ray (default http://127.0.0.1:8265)")
    if ray_resources:
        g.add_argument("--num-gpus", type=_float, metavar="N",
                       help="ray: GPUs for the job (default: 1 when the cluster has GPUs, else 0)")
        g.add_argument("--num-cpus", type=_float, metavar="N", help="ray: CPUs reserved for the job (default: Ray's)")


def _settings(args: argparse.Namespace):
    from kartsim.jobs.config import resolve_settings

    return resolve_settings(getattr(args, "backend", None), getattr(args, "store", None), getattr(args, "address", None),
                            getattr(args, "num_gpus", None), getattr(args, "num_cpus", None))


def _open(args: argparse.Namespace):
    from kartsim.jobs.service import open_settings_store

    settings = _settings(args)
    return settings, open_settings_store(settings)


def _hint(args: argparse.Namespace, command: str) -> str:
    extra = ""
    if getattr(args, "store", None):
        extra += f" --store {args.store}"
    return f"{args.prog} {command}{extra}"


# --------------------------------------------------------------------------------------- commands

def _cmd_sync(args: argparse.Namespace) -> int:
    from kartsim.jobs.tracks import sync_track

    settings, store = _open(args)
    for name in args.track_name:
        t = sync_track(store, name)
        how = "generated automatically" if t.generated else "from its checkpoints file"
        print(f"synced {t.name}: {t.length_m:.0f} m, {t.gates} gates ({how}) -> {store.display(t.rel)}")
        for w in t.warnings:
            print(f"  warning: {w}")
    return 0


def _started(args: argparse.Namespace, job, backend, store) -> None:
    print(f"started job {job.id} ({backend.describe(job)})")
    print(f"  backend: {BACKEND_WORDS.get(backend.name, backend.name)}")
    print(f"  store:   {store.location}")
    print(f"  follow:  {_hint(args, f'logs {job.id} --follow')}")
    print(f"  status:  {_hint(args, f'status {job.id}')}")
    print(f"  fetch:   {_hint(args, f'fetch --path {job.save_name}_final.zip --out {job.save_name}.zip')} "
          "(and the run's telemetry_log.csv beside it)")
    tb = f", tensorboard --logdir {store.display(f'runs/{job.save_name}/tb')}" if job.config.get("run.tensorboard") else ""
    print(f"  monitor: {_hint(args, 'status')} (steps/s, ETA, GPU/CPU use), kartsim dashboard{tb}")
    sys.stdout.flush()


def _start(start: Callable[[], tuple]) -> tuple[tuple, KeyboardInterrupt | None]:
    """(what `start` returned, None), or, when Ctrl-C came while it started the job anyway
    (`service.StartInterrupted`), (that same result, the interrupt) for `_stream` to handle."""
    from kartsim.jobs import service

    try:
        return start(), None
    except service.StartInterrupted as exc:
        return exc.result, exc


def _stream(args: argparse.Namespace, job, backend, announce: Callable[[], None], offset: int = 0,
            interrupted: KeyboardInterrupt | None = None) -> int:
    """Announce the started job, then (without --detach) follow it to its end.

    Ctrl-C asks whether to stop the job (no terminal: detach) from the first line of the announcement
    on, not only once following has begun: a Ctrl-C right after the job id was printed must not end in
    a bare "interrupted" (exit 130) while the job goes on. `interrupted`: a Ctrl-C that came while the
    job was being started (`service.StartInterrupted`), handled the same way once it is announced.
    """
    from kartsim.jobs import service

    store = backend.store
    try:
        announce()
        if interrupted is not None:
            raise interrupted
        if args.detach:
            return 0
        st = service.follow(store, backend, job, offset=offset)
    except KeyboardInterrupt:
        return _on_interrupt(args, job, backend)
    _print_end(args, job, st, store)
    return 0 if st.state == "succeeded" else 1


def _on_interrupt(args: argparse.Namespace, job, backend, stdin=None) -> int:
    stdin = stdin or sys.stdin
    answer = ""
    interactive = False
    try:
        interactive = bool(stdin and stdin.isatty())
    except (ValueError, OSError):
        interactive = False
    if interactive:
        try:
            print("", file=sys.stderr)
            answer = input(f"Stop job {job.id}? It saves an _interrupted checkpoint first. [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
    if answer.strip().lower() in ("y", "yes"):
        print(f"stopping job {job.id} ...", flush=True)
        st = backend.cancel(job)
        print(f"job {job.id}: {st.state}" + (f" ({st.reason})" if st.reason else ""))
        return 130
    print(f"\ndetached: job {job.id} keeps running. Follow it with: {_hint(args, f'logs {job.id} --follow')}")
    return 0


def _print_end(args: argparse.Namespace, job, st, store) -> None:
    line = f"job {job.id} {st.state}" + (f": {st.reason}" if st.reason and st.reason != "finished" else "")
    print(line)
    if st.state == "succeeded":
        print(f"fetch the model: {_hint(args, f'fetch --path {job.save_name}_final.zip --out {job.save_name}.zip')} "
              "(it brings the run's telemetry_log.csv too)")
    elif st.state in ("failed", "cancelled"):
        from kartsim.jobs.store import checkpoints_of

        if checkpoints_of(store, job.save_name):
            print(f"resume it from its last checkpoint: {_hint(args, f'resume {job.id}')}")


def _cmd_train(args: argparse.Namespace) -> int:
    from kartsim.jobs import service

    settings = _settings(args)
    (job, backend), interrupted = _start(lambda: service.submit(settings, args))
    return _stream(args, job, backend, lambda: _started(args, job, backend, backend.store), interrupted=interrupted)


def _train_command(job: Any) -> str:
    """The ``kartsim train`` command line of the job's recorded train settings."""
    import shlex

    from kartsim.rl.train_cmd import train_flags

    return shlex.join(["kartsim", "train", *train_flags(job.config)])


def _fmt_progress(p: dict[str, Any] | None, running: bool) -> str:
    from kartsim.jobs.worker import progress_line

    if not p:
        return "-"
    return progress_line(p, eta=running)


def _short_steps(p: dict[str, Any] | None, total: int) -> str:
    if not p:
        return f"0/{total:,}"
    return f"{int(p.get('num_timesteps', 0)):,}/{int(p.get('total_timesteps') or total):,}"


def _state_text(st) -> str:
    text = st.state + (f" (pid {st.pid})" if st.pid else "")
    return text + (f": {st.reason}" if st.reason and st.reason != "finished" else "")


def _cmd_status(args: argparse.Namespace) -> int:
    from kartsim.jobs import service
    from kartsim.jobs.store import checkpoints_of, job_ids, load_job

    settings, store = _open(args)
    if args.job is None:
        ids = job_ids(store)
        if not ids:
            print(f"no jobs in the job store {store.location} yet; start one with {_hint(args, 'train ... --detach')}")
            return 0
        args.job = ids[-1]
    job = load_job(store, args.job)
    backend = service.backend_of(store, settings, job)
    st = service.wait(backend, job, args.timeout) if args.wait else backend.state(job)
    a = job.attempt
    rows = [("job", job.id), ("state", _state_text(st)), ("backend", backend.describe(job)), ("store", store.location),
            ("command", _train_command(job)), ("run folder", store.display(f"runs/{job.save_name}")),
            ("progress", _fmt_progress(service.progress_of(store, job), not st.terminal)),
            ("attempt", f"{a.n}" + (f" (resumed from {a.resume_from})" if a.resume_from else "")),
            ("started", a.started)]
    if st.ended:
        rows.append(("ended", f"{st.ended}" + (f" (exit code {st.exit_code})" if st.exit_code is not None else "")))
    ckpts = checkpoints_of(store, job.save_name)
    if ckpts:
        rows.append(("checkpoints", f"{len(ckpts)}, last {ckpts[-1][1]} ({ckpts[-1][0]:,} steps)"))
    else:
        rows.append(("checkpoints", "none" if st.terminal else "none yet"))
    final = f"models/{job.save_name}_final.zip"
    if store.exists(final):
        rows.append(("model", f"{final}  (fetch: {_hint(args, f'fetch --path {job.save_name}_final.zip --out {job.save_name}.zip')})"))
    elif st.state in ("failed", "cancelled"):
        rows.append(("next", _hint(args, f"resume {job.id}") if ckpts else "no checkpoint: start it again with --force"))
    best = f"runs/{job.save_name}/{job.save_name}_best.zip"
    if store.exists(best):
        hint = _hint(args, f"fetch --job {job.id} --path {job.save_name}_best.zip --out {job.save_name}_best.zip")
        rows.append(("best model", f"{best}  (best periodic evaluation; fetch: {hint})"))
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    if args.wait:
        return 0 if st.state == "succeeded" else 1
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from kartsim.jobs import service
    from kartsim.jobs.store import JobError, job_ids, load_job

    settings, store = _open(args)
    ids = job_ids(store)
    if not ids:
        print(f"no jobs in the job store {store.location} yet; start one with {_hint(args, 'train ... --detach')}")
        return 0
    rows = [("JOB", "STATE", "BACKEND", "STEPS", "SAVE NAME", "STARTED", "REASON")]
    for jid in reversed(ids[-args.limit:] if args.limit else ids):
        try:
            job = load_job(store, jid)
        except JobError as exc:  # one damaged job.json must not hide the others
            rows.append((jid, "damaged", "-", "-", "-", "-", str(exc)[:60]))
            continue
        try:
            st = service.backend_of(store, settings, job).state(job)
            state, reason = st.state, ("" if st.reason == "finished" else st.reason)
        except KartsimError as exc:
            state, reason = "unknown", str(exc)
        rows.append((job.id, state, job.backend, _short_steps(service.progress_of(store, job), job.timesteps),
                     job.save_name, job.attempt.started.replace("T", " "), reason[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from kartsim.jobs import service
    from kartsim.jobs.store import load_job

    settings, store = _open(args)
    job = load_job(store, args.job)
    if args.follow:
        backend = service.backend_of(store, settings, job)
        try:
            st = service.follow(store, backend, job)
        except KeyboardInterrupt:
            print(f"\n(stopped following; job {job.id} goes on)")
            return 0
        _print_end(args, job, st, store)
        return 0
    text, _ = service.read_log(store, job, 0)
    if not text:
        print(f"(job {job.id} has printed nothing yet)")
    sys.stdout.write(text)
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from kartsim.jobs import service
    from kartsim.jobs.store import load_job

    settings, store = _open(args)
    job = load_job(store, args.job)
    backend = service.backend_of(store, settings, job)
    st = backend.state(job)
    if st.terminal:
        print(f"job {job.id} already {st.state}" + (f": {st.reason}" if st.reason else ""))
        return 0
    print(f"stopping job {job.id} (training saves an _interrupted checkpoint) ...", flush=True)
    st = backend.cancel(job, grace_s=args.grace)
    print(f"job {job.id}: {_state_text(st)}")
    return 0 if st.terminal else 1


def _cmd_resume(args: argparse.Namespace) -> int:
    from kartsim.jobs import service

    settings = _settings(args)
    (job, backend, steps, offset), interrupted = _start(lambda: service.resume(settings, args.job, args.timesteps))

    def announce() -> None:
        a = job.attempt
        print(f"resumed job {job.id} from {a.resume_from} ({steps:,} steps) towards {job.timesteps:,} steps "
              f"(attempt {a.n}, {backend.describe(job)})")
        print(f"  follow:  {_hint(args, f'logs {job.id} --follow')}")
        sys.stdout.flush()

    return _stream(args, job, backend, announce, offset, interrupted)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from kartsim.jobs import service
    from kartsim.jobs.store import JobError, load_job

    settings, store = _open(args)
    job = load_job(store, args.job) if args.job else None
    try:
        rel, dest = service.fetch(store, args.path, args.out, args.force, job, echo=print)
    except JobError as exc:
        running = _running_job_for(settings, store, args.path, job)
        if running is None:
            raise
        raise JobError(f"{exc}; job {running} is still running, so its final model is not there yet: "
                       f"{_hint(args, f'status {running}')} shows its progress and checkpoints") from None
    print(f"fetched {store.display(rel)} -> {dest}")
    final = re.fullmatch(r"models/(.+)_final\.zip", rel)
    if final:
        _fetch_telemetry_beside(args, store, final.group(1), dest)
    return 0


def _running_job_for(settings, store, path: str, job) -> str | None:
    """The id of the newest job still running whose run would write `path` (NAME_final.zip)."""
    from kartsim.jobs import service
    from kartsim.jobs.store import job_ids, load_job

    for jid in reversed([job.id] if job else job_ids(store)):
        candidate = load_job(store, jid)
        if path.rsplit("/", 1)[-1] == f"{candidate.save_name}_final.zip":
            st = service.backend_of(store, settings, candidate).state(candidate)
            return jid if not st.terminal else None
    return None


def _fetch_telemetry_beside(args: argparse.Namespace, store, save_name: str, model: Path) -> None:
    """With a final model, bring its run's telemetry to ``telemetry_log.csv`` beside it (the guide
    reads it there). A link left by local training is replaced; a real file only with --force."""
    from kartsim.jobs import service

    rel = f"runs/{save_name}/telemetry_log.csv"
    dest = model.parent / "telemetry_log.csv"
    if not store.exists(rel):
        return
    if dest.exists() and not dest.is_symlink() and not args.force:
        print(f"kept {dest} (exists); the run's telemetry: {_hint(args, f'fetch --path {rel} --out FILE')}")
        return
    if dest.is_symlink():
        dest.unlink()  # a link to a local run's CSV: replace the link, never write through it
    service.fetch(store, rel, str(dest), True)
    print(f"fetched {store.display(rel)} -> {dest} (the run's telemetry)")


# ----------------------------------------------------------------------------------------- parser

def add_job_commands(sub: argparse._SubParsersAction, prog: str) -> None:
    from kartsim.rl.train_cmd import add_train_arguments

    def cmd(name: str, help_: str, func, ray_resources: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.set_defaults(func=func, prog=prog)
        _add_common(p, ray_resources)
        return p

    p = cmd("sync", "check a track as Track.load loads it and store it (+ checkpoints) for jobs", _cmd_sync)
    p.add_argument("--track-name", nargs="+", required=True, metavar="TRACK",
                   help="PNG path(s) or bundled track name(s); checkpoints are generated when missing")

    p = cmd("train", "start a training job on the local or Ray backend: every `kartsim train` flag, plus --detach",
            _cmd_train, ray_resources=True)
    p.description = TRAIN_DESCRIPTION
    add_train_arguments(p)
    for action in p._actions:  # set by the job itself: hidden (and refused when given)
        if action.dest in ("run.runs_dir", "run.models_dir", "run.resume"):
            action.help = argparse.SUPPRESS
    p.add_argument("--detach", action="store_true",
                   help="print the job id and return (default: stream the job's log until it ends)")

    p = cmd("status", "state, progress and checkpoints of a job", _cmd_status)
    p.add_argument("job", nargs="?", metavar="JOB", help="job id or a unique prefix (default: the latest job)")
    p.add_argument("--wait", action="store_true", help="wait until the job ends (exit code 0 when it succeeded)")
    p.add_argument("--timeout", type=_float, metavar="S", help="with --wait: give up after S seconds")

    p = cmd("list", "recent jobs of the job store", _cmd_list)
    p.add_argument("--limit", type=_int, default=20, help="at most this many jobs, newest first (0: all)")

    p = cmd("logs", "print a job's output", _cmd_logs)
    p.add_argument("job", metavar="JOB", help="job id or a unique prefix")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")

    p = cmd("cancel", "stop a job (training saves an _interrupted checkpoint first)", _cmd_cancel)
    p.add_argument("job", metavar="JOB", help="job id or a unique prefix")
    p.add_argument("--grace", type=_float, default=60.0, metavar="S",
                   help="seconds to let training save and stop before it is killed (default 60)")

    p = cmd("resume", "start a failed / cancelled job again from its last checkpoint", _cmd_resume, ray_resources=True)
    p.add_argument("job", metavar="JOB", help="job id or a unique prefix")
    p.add_argument("--timesteps", type=_int, help="new total env steps (default: the job's own)")
    p.add_argument("--detach", action="store_true", help="return at once (default: stream the log until it ends)")

    p = cmd("fetch", "copy a model, checkpoint, telemetry CSV or TensorBoard folder from the job store", _cmd_fetch)
    p.add_argument("--path", required=True, metavar="PATH",
                   help="a file name (NAME_final.zip, NAME_1000_steps.zip, telemetry_log.csv, tb) or a path in the store")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: its name, in this folder)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--job", metavar="JOB", help="look only in this job's run folder")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("jobs", help="background / Ray training jobs: sync, train, status, logs, fetch, ...",
                              description=__doc__.splitlines()[0],
                              epilog="\n".join(__doc__.splitlines()[4:14]), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="jobs_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    add_job_commands(sub, KARTSIM_PROG)


def main(argv: list[str] | None = None, prog: str = SHIM_PROG) -> int:
    """``python tools/track_cli.py ...``: the same commands as ``kartsim jobs ...``."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     epilog="\n".join(__doc__.splitlines()[4:14]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION")
    add_job_commands(sub, prog)
    from kartsim.cli import run_parsed

    return run_parsed(parser, argv)

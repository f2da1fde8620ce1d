"""``kartsim jobs sync``: validate a track as `Track.load` loads it and put it (image, checkpoints,
legend) in the job store's ``tracks/`` folder, where jobs find it by its file name.

A user's track is stored under a name keyed by its content, ``<stem>-<8 hex digits>.png`` (a hash
of the image, its checkpoints and its legend): two different ``t.png`` from two folders never
replace each other, an earlier sync's legend never joins a new image, and a user's ``circuit.png``
never shadows the bundled circuit. A bundled track keeps its own name (its content is the bundled
one)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kartsim.errors import TrackError
from kartsim.jobs.store import Store


@dataclass
class SyncedTrack:
    name: str              # file name in the store (and what jobs pass to --track-name)
    rel: str               # store path of the image
    length_m: float
    gates: int
    generated: bool        # checkpoints were placed automatically (no checkpoints file next to the image)
    warnings: list[str]


def sync_track(store: Store, name: str) -> SyncedTrack:
    """Load `name` (a PNG path or a bundled track name) with `Track.load` (TrackError when it cannot
    be used), write its checkpoints file when it has none, and store image + checkpoints + legend."""
    from kartsim.sim.track import Track, resolve_track_path

    path = resolve_track_path(name)
    if path.suffix.lower() != ".png":
        raise TrackError(f"{path}: a track must be a .png image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kept in track.warnings
        track = Track.load(path)
    with tempfile.TemporaryDirectory(prefix="kartsim-sync-") as tmp:
        stage = Path(tmp)
        # Checkpoints as the track was loaded: the file's gates, or the automatic ones (generated).
        cp = track.save_checkpoints(stage / "checkpoints.json")
        legend = path.with_suffix(".json")
        stem = path.stem if _is_bundled(path) else f"{path.stem}-{_content_key(path, cp, legend)}"
        shutil.copyfile(path, stage / f"{stem}.png")
        _write_checkpoints(cp, stage / f"{stem}.checkpoints.json", f"{stem}.png")
        cp.unlink()
        if legend.is_file():
            shutil.copyfile(legend, stage / f"{stem}.json")
        for f in sorted(stage.iterdir()):
            store.upload(f, f"tracks/{f.name}")
    return SyncedTrack(name=f"{stem}.png", rel=f"tracks/{stem}.png", length_m=float(track.length),
                       gates=len(track.gates), generated=track.gates_source != "file",
                       warnings=list(getattr(track, "warnings", [])))


def _is_bundled(path: Path) -> bool:
    from kartsim.sim.track import BUNDLED_DIR

    return path.resolve().parent == Path(BUNDLED_DIR).resolve()


def _content_key(image: Path, checkpoints: Path, legend: Path) -> str:
    digest = hashlib.sha256()
    for part in (image, checkpoints, legend):
        digest.update(part.read_bytes() if part.is_file() else b"")
        digest.update(b"\0")
    return digest.hexdigest()[:8]


def _write_checkpoints(src: Path, dst: Path, image_name: str) -> None:
    """The checkpoints file renamed with its image: its "track" field names the stored image."""
    import json

    data = json.loads(src.read_text())
    if isinstance(data, dict):
        data["track"] = image_name
    dst.write_text(json.dumps(data, indent=1) + "\n")


def job_tracks(store: Store, names: list[str], echo=print) -> list[str]:
    """The --track-name values a job gets: image files on disk are synced (and passed by file name),
    names already synced are passed by file name, bundled names, ``random`` and ``bundled`` pass through.
    A job runs in the store's tracks/ folder, so a file name finds the synced copy first."""
    from kartsim.sim.track import resolve_track_path

    out: list[str] = []
    for raw in names:
        item = str(raw)
        p = Path(item).expanduser()
        if item in ("random", "bundled"):
            out.append(item)
        elif p.is_dir():
            pngs = sorted(p.glob("*.png"))
            if not pngs:
                raise TrackError(f"folder {item} holds no .png track; put track images in it or pass a PNG")
            for png in pngs:
                out.append(_sync_and_echo(store, str(png), echo))
        elif p.is_file():
            out.append(_sync_and_echo(store, item, echo))
        else:
            stored = next((c for c in (p.name, f"{p.name}.png") if len(p.parts) == 1
                           and store.exists(f"tracks/{c}")), None)
            if stored:
                out.append(stored)
            else:
                resolve_track_path(item)  # a bundled name, or TrackError (not found)
                out.append(item)
    return out


def _sync_and_echo(store: Store, name: str, echo) -> str:
    synced = sync_track(store, name)
    echo(f"synced track {synced.name} ({synced.length_m:.0f} m, {synced.gates} gates)")
    return synced.name


def stage_tracks(store: Store, names: list[str], into: Path) -> None:
    """Copy the synced tracks a job uses (image, checkpoints, legend) from the store into `into`."""
    for name in names:
        stem = Path(name).stem
        for f in (name, f"{stem}.checkpoints.json", f"{stem}.json"):
            if store.exists(f"tracks/{f}"):
                store.download(f"tracks/{f}", into / f)


# Train settings that name a file or folder the job reads (demonstrations, initial weights).
INPUT_FIELDS = {"pretrain.demos": "--demos", "pretrain.init_from": "--init-from"}


def job_inputs(store: Store, config: dict[str, Any], job_id: str, echo=print) -> tuple[dict[str, Any], list[str]]:
    """Upload the files that the job's ``--demos`` / ``--init-from`` (`config`: dotted TrainConfig
    paths) name, when they are paths on this machine (``ai:hard`` is not), to the store's
    ``tracks/inputs/<job_id>/`` and point the settings at them, relative to the folder a job runs in.
    Returns (the new config, the paths to stage with the tracks)."""
    out, staged = dict(config), []
    for key, flag in INPUT_FIELDS.items():
        if not isinstance(config.get(key), str) or not Path(config[key]).expanduser().exists():
            continue
        src = Path(config[key]).expanduser()
        rel = f"inputs/{job_id}/{src.name}"
        store.upload(src, f"tracks/{rel}")
        out[key] = rel
        staged.append(rel)
        echo(f"synced {flag} {src} to the job store")
    return out, staged

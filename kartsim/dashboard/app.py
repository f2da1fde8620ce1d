"""The dashboard web app: Starlette routes, the live websocket, and `serve()` (uvicorn).

Pages (static HTML + JS in ``static/``, charts drawn by Plotly.js from the plotly package itself,
nothing fetched from the internet):

====================  ===================================================================
``/``                 runs and jobs: state, steps, steps/s, ETA, device, last checkpoint
``/run/<root>/<name>``  a run: summary and learning curves (TensorBoard + telemetry CSV)
``/live``             live driving: the track map with the karts, speed/throttle/brake/steering
``/laps``             lap analysis: pick laps of telemetry CSVs, overlaid as in ``kartsim compare``
====================  ===================================================================

JSON API under ``/api/``; every problem is ``{"error": message}`` with a 4xx status. The live
feed is the websocket ``/ws/live/<kind>/<root>/<name>`` (text messages: the producer's JSON document
as it wrote it, or ``{"type": "status" | "error", "message": ...}`` when the feed is missing or
ended).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from kartsim.dashboard.data import DashboardError, Library, live_state
from kartsim.telemetry.live import feed_version, read_live, read_live_bytes

STATIC = Path(__file__).parent / "static"
POLL_S = 0.01          # how often a websocket looks for a new frame (16 bytes read; 100 Hz, well above 20 Hz feeds)
MAX_LAPS = 8


def plotly_js_path() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise RuntimeError(f"plotly.min.js is missing from the plotly package ({path}); reinstall plotly")
    return path


def _error(exc: DashboardError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def _page(name: str):
    async def handler(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html", headers={"Cache-Control": "no-cache"})

    return handler


async def _plotly_js(request: Request) -> Response:
    return FileResponse(plotly_js_path(), media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})


def _api(fn):
    """A JSON endpoint: `fn(request)` runs in a worker thread; DashboardError -> its message."""

    async def handler(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(fn, request))
        except DashboardError as exc:
            return _error(exc)

    return handler


def _compare_endpoint(lib: Library):
    """POST /api/compare: the JSON body names the laps to overlay."""

    async def compare(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            return _error(DashboardError("send JSON: {\"laps\": [{\"csv\": ..., \"episode\": ..., \"lap\": ...}]}"))
        try:
            return JSONResponse(await run_in_threadpool(_compare, lib, body))
        except DashboardError as exc:
            return _error(exc)

    return compare


def _picked_laps(lib: Library, picks: list[Any]) -> tuple[list[Any], list[Any]]:
    """The laps a compare request picked, each labelled (uniquely) by its CSV, episode and lap; and their tracks."""
    import copy

    laps, tracks, labels = [], [], []
    for item in picks:
        if not isinstance(item, dict):
            raise DashboardError("each lap is {\"csv\": ..., \"episode\": ..., \"lap\": ...}")
        try:
            episode, number = int(item.get("episode")), int(item.get("lap"))
        except (TypeError, ValueError, OverflowError):
            raise DashboardError("episode and lap must be whole numbers") from None
        lap, track, label = lib.lap(str(item.get("csv", "")), episode, number)
        laps.append(lap)
        tracks.append(track)
        labels.append(f"{label} e{episode} L{number}")
    picked = []
    for lap, label in zip(laps, labels):
        lap = copy.copy(lap)
        lap.driver = label if labels.count(label) == 1 else f"{label} ({len(picked) + 1})"
        picked.append(lap)
    return picked, tracks


def _compare(lib: Library, body: Any) -> dict[str, Any]:
    from kartsim.dashboard.figures import lap_figures

    if not isinstance(body, dict) or not isinstance(body.get("laps"), list) or not body["laps"]:
        raise DashboardError("pick at least one lap")
    picked, tracks = _picked_laps(lib, body["laps"][:MAX_LAPS])
    track_name = body.get("track") or next((t for t in tracks if t), None)
    track_img, problem = None, None
    if track_name:
        if track_name not in lib.tracks.bundled() and track_name not in tracks:
            raise DashboardError(f"track {track_name!r}: pick a bundled track or the run's own", 403)
        try:
            track_img = lib.tracks.image(track_name)
        except DashboardError as exc:
            problem = exc.message
    length = track_img["length_m"] if track_img else float(max(np.nanmax(lap.distance) for lap in picked))
    out = lap_figures(picked, length, track_img)
    out["track"] = track_img["name"] if track_img else None
    out["problem"] = problem
    return out


def _live_endpoint(lib: Library):
    """The websocket /ws/live/<kind>/<root>/<name>: streams that live feed until the client leaves."""

    async def live_ws(ws: WebSocket) -> None:
        p = ws.path_params
        await ws.accept()
        try:
            path = lib.live_path(p["kind"], p["root"], p["name"])
        except DashboardError as exc:
            await ws.send_text(json.dumps({"type": "error", "message": exc.message}))
            await ws.close()
            return
        # The feed loop only sends, so on its own it never hears a client leave or the server close
        # the socket on shutdown (SIGTERM: code 1012) and would keep the process alive; a receive
        # task ends the handler on either.
        async with anyio.create_task_group() as tasks:
            async def first_to_end(work) -> None:
                await work
                tasks.cancel_scope.cancel()

            tasks.start_soon(first_to_end, _send_feed(ws, path))
            tasks.start_soon(first_to_end, _until_disconnected(ws))

    return live_ws


async def _until_disconnected(ws: WebSocket) -> None:
    try:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        return


async def _send_feed(ws: WebSocket, path) -> None:
    last_key = None
    status = None
    last_change = last_check = time.monotonic()
    try:
        while True:
            key = feed_version(path)
            if key is None:
                if status != "missing":
                    status = "missing"
                    await ws.send_text(json.dumps({"type": "status", "state": "missing",
                                                   "message": "no live feed: the run or session is not running "
                                                              "(or was deleted); waiting for it"}))
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            if key != last_key:
                last_key = key
                last_change = now
                status = await _send_frame(ws, path, status)
            elif status is None and now - last_change > 2.0 and now - last_check > 1.0:
                # no new frame for a while (a PPO update, or the producer died): is it still there?
                last_check = now
                alive, reason = live_state(read_live(path))
                if not alive:
                    status = reason
                    await ws.send_text(json.dumps({"type": "status", "state": "ended",
                                                   "message": f"not live: {reason}"}))
            await asyncio.sleep(POLL_S)
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        return


async def _send_frame(ws: WebSocket, path, status: str | None) -> str | None:
    """Sends the feed's new document (or, once, why it is not live); returns the feed's status (None: live)."""
    raw = read_live_bytes(path)
    if raw is None:
        return status
    # a frame goes out as the producer wrote it (no parsing); anything else is looked at
    if b'"active":true' in raw:
        await ws.send_text(raw.decode("utf-8", "replace"))
        return None
    doc = read_live(path) or {}
    alive, reason = live_state(doc)
    if alive:
        await ws.send_text(json.dumps(doc, separators=(",", ":")))
        return None
    if status != reason:
        await ws.send_text(json.dumps({"type": "status", "state": "ended", "message":
                                       f"the live feed has {reason}" if reason == "ended"
                                       else f"not live: {reason}", "last": doc}))
        return reason
    return status


async def _not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": f"no such API: {request.url.path}"}, status_code=404)
    return Response("Not found: the dashboard has /, /run/<root>/<name>, /live and /laps", status_code=404,
                    media_type="text/plain")


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"the dashboard hit an unexpected problem ({exc.__class__.__name__}: {exc}); "
                                  "reload the page"}, status_code=500)


def create_app(runs_dir: str | Path = "runs", job_store: str | None = None, jobs_settings: Any = None,
               sweeps_dir: str | Path = "sweeps") -> Starlette:
    lib = Library(runs_dir, job_store, jobs_settings, sweeps_dir)

    def runs(request: Request) -> dict[str, Any]:
        return {"runs": lib.list_runs(), "jobs": lib.jobs.rows(), "sweeps": lib.list_sweeps(),
                "roots": {k: r.label for k, r in lib.roots.items()},
                "runs_dir_exists": lib.roots["runs"].path.is_dir()}

    def run(request: Request) -> dict[str, Any]:
        p = request.path_params
        return lib.run_summary(p["root"], p["name"])

    def curves(request: Request) -> dict[str, Any]:
        from kartsim.dashboard.figures import learning_figures, template

        p = request.path_params
        data = lib.curves(p["root"], p["name"])
        out = {"figures": learning_figures(data), "messages": data["messages"]}
        if request.query_params.get("template") != "0":
            out["template"] = template()
        return out

    def live_list(request: Request) -> dict[str, Any]:
        return {"sources": lib.live_sources()}

    def live_track(request: Request) -> dict[str, Any]:
        p = request.path_params
        return lib.live_track(p["kind"], p["root"], p["name"])

    def csvs(request: Request) -> dict[str, Any]:
        return {"csvs": lib.list_csvs(), "tracks": lib.tracks.bundled()}

    def laps(request: Request) -> dict[str, Any]:
        ref = request.query_params.get("csv", "")
        return lib.laps(ref)

    routes = [
        Route("/", _page("runs.html")),
        Route("/run/{root}/{name}", _page("run.html")),
        Route("/live", _page("live.html")),
        Route("/laps", _page("laps.html")),
        Route("/static/plotly.min.js", _plotly_js),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
        Route("/api/runs", _api(runs)),
        Route("/api/run/{root}/{name}", _api(run)),
        Route("/api/run/{root}/{name}/curves", _api(curves)),
        Route("/api/live", _api(live_list)),
        Route("/api/live/{kind}/{root}/{name}/track", _api(live_track)),
        Route("/api/csvs", _api(csvs)),
        Route("/api/laps", _api(laps)),
        Route("/api/compare", _compare_endpoint(lib), methods=["POST"]),
        WebSocketRoute("/ws/live/{kind}/{root}/{name}", _live_endpoint(lib)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 500: _server_error})
    app.state.library = lib
    return app


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(runs_dir: str | Path = "runs", host: str = "127.0.0.1", port: int = 8050, job_store: str | None = None,
          jobs_settings: Any = None, echo=print, sweeps_dir: str | Path = "sweeps") -> None:
    """Run the dashboard until Ctrl-C."""
    import socket

    import uvicorn

    from kartsim.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port "
                              "(or --host)") from None
    app = create_app(runs_dir, job_store, jobs_settings, sweeps_dir)
    # timeout_graceful_shutdown: SIGTERM / Ctrl-C stop it within about a second even if a client hangs on
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, ws="websockets-sansio",
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    echo(f"kartsim dashboard: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/  "
         f"(runs: {runs_dir}; Ctrl-C to stop)")
    server.run()


__all__ = ["create_app", "serve", "is_loopback", "plotly_js_path"]

"""Plotly figures of the dashboard: learning curves of a run and the lap analysis.

The lap analysis shows the figures of ``kartsim compare`` (:mod:`kartsim.apps.compare`), interactive: the
laps come from `kartsim.telemetry.laps.extract_laps`, the time along the lap from the same interpolation
(`kartsim.telemetry.laps.time_at`) and the sectors from `kartsim.telemetry.laps.sector_times`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kartsim.telemetry.laps import COLORS, Lap, sector_times, time_at
from kartsim.dashboard.data import CURVE_GROUPS, CURVES

_LAYOUT = dict(template="plotly_white", margin=dict(l=55, r=20, t=72, b=40), font=dict(size=12),
               legend=dict(orientation="h", yanchor="bottom", y=1.01, x=0))


def _json(fig: Any) -> dict[str, Any]:
    """The figure as a plain JSON-able dict ({"data": [...], "layout": {...}})."""
    return json.loads(fig.to_json())


def _finite(values: Any) -> list[float | None]:
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]


_TEMPLATE: dict[str, Any] | None = None


def template() -> dict[str, Any]:
    """Plotly's "plotly_white" template as JSON (sent once with the learning curves)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        import plotly.io as pio
        from plotly.io.json import to_json_plotly

        _TEMPLATE = json.loads(to_json_plotly(pio.templates["plotly_white"].to_plotly_json()))
    return _TEMPLATE


def _curve(key: str, title: str, unit: str, x: list, y: list, source: str, markers_only: bool) -> dict[str, Any]:
    """One small learning-curve figure as plain Plotly JSON: built directly (a request builds a
    dozen of them every few seconds while a run page is open; plotly's validating figure objects
    take ~20 ms each)."""
    trace = {"type": "scatter", "x": x, "y": y, "name": key,
             "mode": "markers" if markers_only else "lines+markers",
             "marker": {"size": 4, **({"color": "#ff7f0e"} if markers_only else {})},
             "line": {"width": 1.6, "color": "#1f77b4"}}
    layout = {"title": {"text": title, "font": {"size": 14}}, "height": 260, "showlegend": False,
              "margin": {"l": 55, "r": 20, "t": 40, "b": 40}, "font": {"size": 12},
              "xaxis": {"title": {"text": "env steps"}}, "yaxis": {"title": {"text": unit}}}
    return {"key": key, "title": title, "source": source, "figure": {"data": [trace], "layout": layout}}


def _group(key: str, title: str, unit: str, lines: list[tuple[str, list, list]]) -> dict[str, Any]:
    """A learning-curve figure with one line per (name, x, y), in `COLORS` order, with a legend (at the
    right: above the plot it would wrap into the title on a narrow card)."""
    fig = _curve(key, title, unit, [], [], "tensorboard", False)
    fig["figure"]["data"] = [{"type": "scatter", "x": x, "y": y, "name": name, "mode": "lines+markers",
                              "marker": {"size": 4}, "line": {"width": 1.6, "color": COLORS[k % len(COLORS)]}}
                             for k, (name, x, y) in enumerate(lines)]
    fig["figure"]["layout"]["showlegend"] = True
    return fig


def learning_figures(curves: dict[str, Any]) -> list[dict[str, Any]]:
    """One small figure per metric: TensorBoard scalars first (one figure per `CURVES` tag, then one
    per `CURVE_GROUPS` family with a line per tag of it found in the logs), then per-episode curves of
    the telemetry CSV (env 0). Each item: {"key", "title", "source", "figure"}; the figures use
    `template()` (the page sets it)."""
    out = []
    tb = curves.get("tb") or {}
    for tag, title, unit in CURVES:
        series = tb.get(tag)
        if not series or not series.get("steps"):
            continue
        out.append(_curve(tag, title, unit, list(series["steps"]), _finite(series["values"]), "tensorboard", False))
    for prefix, title, unit in CURVE_GROUPS:
        lines = [(tag[len(prefix):], list(s["steps"]), _finite(s["values"])) for tag, s in tb.items()
                 if tag.startswith(prefix) and len(tag) > len(prefix) and s and s.get("steps")]
        if lines:
            out.append(_group(prefix + "*", title, unit, lines))
    episodes = curves.get("episodes") or {}
    steps = episodes.get("step") or []
    for key, title, unit in (("reward", "episode reward (env 0, telemetry CSV)", "reward"),
                             ("laps", "laps per episode (env 0)", "laps"),
                             ("mean_speed", "mean speed per episode (env 0)", "m/s"),
                             ("off_track_share", "off-track share per episode (env 0)", "share")):
        values = episodes.get(key)
        if not values or not steps:
            continue
        out.append(_curve(f"csv/{key}", title, unit, list(steps), _finite(values), "telemetry", True))
    return out


def lap_figures(laps: list[Lap], length: float, track_img: dict[str, Any] | None) -> dict[str, Any]:
    """The ``kartsim compare`` figures for `laps` (the first one is the reference of the delta):
    speed, inputs, delta, driven lines on the map coloured by speed, g-g; plus the sector table."""
    names = [lap.driver for lap in laps]
    color = [COLORS[k % len(COLORS)] for k in range(len(laps))]
    figs = {"speed": _speed_plot(laps, names, color, length), "inputs": _inputs_plot(laps, names, color, length),
            "delta": _delta_plot(laps, names, color, length), "lines": _lines_plot(laps, names, color, track_img),
            "gg": _gg_plot(laps, names, color)}
    return {"figures": figs, "table": _lap_table(laps, names, color, length), "length_m": round(length, 1)}


def _speed_plot(laps: list[Lap], names: list[str], color: list[str], length: float) -> dict[str, Any]:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, lap in enumerate(laps):
        fig.add_trace(go.Scatter(x=lap.distance, y=lap.data["speed"].to_numpy(dtype=float), mode="lines",
                                 line=dict(color=color[k], width=1.6), name=f"{names[k]} ({lap.time:.2f} s)"))
    fig.update_layout(title="speed", height=330, xaxis_title="distance along the lap (m)",
                      yaxis_title="speed (m/s)", xaxis_range=[0, length], **_LAYOUT)
    return _json(fig)


def _inputs_plot(laps: list[Lap], names: list[str], color: list[str], length: float) -> dict[str, Any]:
    """Throttle/brake above steering, one legend entry per lap for both."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for k, lap in enumerate(laps):
        fig.add_trace(go.Scatter(x=lap.distance, y=lap.data["throttle"].to_numpy(dtype=float), mode="lines",
                                 line=dict(color=color[k], width=1.3), name=names[k], legendgroup=names[k]), 1, 1)
        fig.add_trace(go.Scatter(x=lap.distance, y=lap.data["steering"].to_numpy(dtype=float), mode="lines",
                                 line=dict(color=color[k], width=1.3), name=names[k], legendgroup=names[k],
                                 showlegend=False), 2, 1)
    fig.update_yaxes(title_text="throttle (< 0 brake)", row=1, col=1)
    fig.update_yaxes(title_text="steering (+ right)", row=2, col=1)
    fig.update_xaxes(title_text="distance along the lap (m)", range=[0, length], row=2, col=1)
    fig.update_layout(title="inputs", height=400, **_LAYOUT)
    return _json(fig)


def _delta_plot(laps: list[Lap], names: list[str], color: list[str], length: float) -> dict[str, Any]:
    """Time gained or lost along the lap against the first lap, the sector bounds dashed."""
    import plotly.graph_objects as go

    d = np.linspace(0.0, length, 600)
    base = time_at(laps[0], d)
    fig = go.Figure()
    for k, lap in enumerate(laps):
        fig.add_trace(go.Scatter(x=d, y=time_at(lap, d) - base, mode="lines", line=dict(color=color[k], width=1.6),
                                 name=names[k]))
    for b in np.linspace(0.0, length, 4)[1:-1]:
        fig.add_vline(x=float(b), line=dict(color="#444", width=1, dash="dash"))
    fig.update_layout(title=f"lap-time delta to {names[0]} (> 0: behind)", height=300,
                      xaxis_title="distance along the lap (m)", yaxis_title="delta (s)", xaxis_range=[0, length],
                      **_LAYOUT)
    return _json(fig)


def _lines_plot(laps: list[Lap], names: list[str], color: list[str], track_img: dict[str, Any] | None) -> dict[str, Any]:
    """The driven lines over the track image, each as a thin line plus markers coloured by speed
    (one colour scale for all laps; hovering a marker shows distance and speed)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    vmax = max(float(lap.data["speed"].max()) for lap in laps)
    if track_img and track_img.get("source"):
        fig.add_trace(go.Image(source=track_img["source"], x0=0, y0=0, dx=track_img["dx"], dy=track_img["dy"],
                               hoverinfo="skip", name="track"))
    for k, lap in enumerate(laps):
        x = lap.data["x"].to_numpy(dtype=float)
        y = lap.data["y"].to_numpy(dtype=float)
        sp = lap.data["speed"].to_numpy(dtype=float)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color[k], width=1), opacity=0.6,
                                 name=names[k], legendgroup=names[k], hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", legendgroup=names[k], showlegend=False, name=names[k],
            marker=dict(size=4, color=sp, colorscale="Plasma", cmin=0.0, cmax=vmax,
                        colorbar=dict(title="m/s", thickness=12) if k == 0 else None, showscale=k == 0),
            customdata=np.column_stack([sp, lap.distance]),
            hovertemplate=f"{names[k]}<br>%{{customdata[1]:.0f}} m: %{{customdata[0]:.1f}} m/s<extra></extra>"))
    fig.update_layout(title="driven lines, coloured by speed", height=560, **_LAYOUT)
    fig.update_xaxes(title_text="x (m)", scaleanchor="y", showgrid=False, constrain="domain")
    fig.update_yaxes(title_text="y (m)", autorange="reversed", showgrid=False, constrain="domain")
    return _json(fig)


def _gg_plot(laps: list[Lap], names: list[str], color: list[str]) -> dict[str, Any]:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k, lap in enumerate(laps):
        fig.add_trace(go.Scatter(x=lap.data["lateral_g"].to_numpy(dtype=float),
                                 y=lap.data["longitudinal_g"].to_numpy(dtype=float), mode="markers",
                                 marker=dict(size=4, color=color[k], opacity=0.6), name=names[k]))
    fig.update_layout(title="g-g diagram", height=420, xaxis_title="lateral g (+ right)",
                      yaxis_title="longitudinal g (+ accelerating)", **_LAYOUT)
    fig.update_xaxes(scaleanchor="y", zeroline=True)
    return _json(fig)


def _lap_table(laps: list[Lap], names: list[str], color: list[str], length: float) -> list[dict[str, Any]]:
    """One row per lap: lap and sector times, the gap to the first lap, speeds and peak lateral g."""
    return [{
        "driver": names[k], "color": color[k], "episode": lap.episode, "lap": lap.number,
        "lap_time": round(lap.time, 3), "sectors": [round(s, 3) for s in sector_times(lap, length)],
        "gap": round(lap.time - laps[0].time, 3), "top_speed": round(float(lap.data["speed"].max()), 2),
        "mean_speed": round(float(lap.data["speed"].mean()), 2),
        "max_lateral_g": round(float(lap.data["lateral_g"].abs().max()), 2),
    } for k, lap in enumerate(laps)]


__all__ = ["learning_figures", "lap_figures", "template"]

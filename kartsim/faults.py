"""Deterministic fault injection for the fault tests (tests/integration/test_faults.py).

``KARTSIM_FAULT=<point>[@<n>]:<SIGNAL>`` (e.g. ``update@2:SIGTERM``) makes this process send itself
SIGNAL the n-th time (default: the first) it passes `point`. Points: ``rollout`` (an env step of
training), ``update`` (a minibatch of a PPO update), ``save`` (a model zip written, not yet renamed
into place), ``runner`` (a job's wrapper, its training process started). Unset, `point` costs one
dictionary look-up.
"""

from __future__ import annotations

import os
import signal

_passed: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("KARTSIM_FAULT")
    if not spec:
        return
    where, _, sig = spec.partition(":")
    target, _, nth = where.partition("@")
    if target != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, sig or "SIGINT"))

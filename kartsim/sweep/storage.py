"""The study storage: Optuna's RDBStorage, whose stale trials also include those whose process was
killed before their first heartbeat.

Optuna counts a RUNNING trial as stale only once it has sent a heartbeat. A process killed between
creating its trial and starting the heartbeat thread left the trial RUNNING for ever, and every
worker of the sweep waited on it (seen in CI). Here such a trial is stale once this process has seen
it without a heartbeat for longer than the grace period, timed on this process's clock: the
machines sharing a study may disagree on the time. (Its own module: optuna is imported only where a
study is opened, and Ray pickles the storage by reference.)
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState


class HeartbeatStorage(optuna.storages.RDBStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._silent_since: dict[int, float] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._silent_since = {}  # times on another process's clock mean nothing here

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        running = [t._trial_id for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))]
        with _create_scoped_session(self.scoped_session) as session:
            beating = {row[0] for row in session.query(models.TrialHeartbeatModel.trial_id)
                       .filter(models.TrialHeartbeatModel.trial_id.in_(running))}
        now = time.monotonic()
        self._silent_since = {i: self._silent_since.get(i, now) for i in running if i not in beating}
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        return stale + [i for i, since in self._silent_since.items() if now - since > grace]

"""Hook base class: extension points called by the task at each stage of a run.

A hook reads what it needs from the task (``task.phase``, ``task.step_in_phase``, ``task.metrics()``,
...). Reading metrics synchronizes with the device, so hooks that do it on every step should only
do so at their own intervals.
"""

from __future__ import annotations

from typing import Any, Dict


class ClassyHook:
    """Override any of the lifecycle methods; the defaults do nothing."""

    #: Key of this hook's state in checkpoints (defaults to the class name).
    name: str = ""
    #: A test-only run (``--eval-only --resume``) loads the model and the states of the hooks that set
    #: this: those holding weights to evaluate (the EMA), not training progress.
    restore_in_test_only: bool = False

    def on_start(self, task) -> None:
        """Once, before the first phase (after a resume has been loaded)."""

    def on_phase_start(self, task) -> None:
        """Before each train or test phase."""

    def on_step(self, task) -> None:
        """After each train or test step."""

    def on_phase_end(self, task) -> None:
        """After each phase, once the phase's metrics are final (``task.last_phase_metrics``)."""

    def on_end(self, task) -> None:
        """Once, after the last phase (also after an error, with ``task.failed`` set, and after a
        preemption signal stopped the run at a safe point, with ``task.preempted`` set)."""

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass

    @property
    def key(self) -> str:
        return self.name or type(self).__name__

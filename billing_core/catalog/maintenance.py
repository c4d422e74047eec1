"""The maintenance run's parts (doMaintenance, `callgate maintenance`).

Each subsystem that has periodic work registers a task here, the way methods register in
billing_core.catalog.registry: `@MAINTENANCE.task("name", order=N)` on
`async def task(services, now) -> dict[str, Any]`. The run calls them in `order`, each
with the same `now`, and answers {name: what the task reported}. A task must be
idempotent: the run may be repeated (cron, an operator, two hosts) and must charge
nothing twice. A task that fails is reported as {"error": E_*-code or the exception's
name} and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from billing_core.errors import ApiError

log = structlog.get_logger(__name__)

Task = Callable[[Any, datetime], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class TaskDef:
    name: str
    order: int
    run: Task


class Maintenance:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskDef] = {}

    def task(self, name: str, *, order: int = 100) -> Callable[[Task], Task]:
        def register(run: Task) -> Task:
            if name in self._tasks:
                raise ValueError(f"maintenance task {name} defined twice")
            self._tasks[name] = TaskDef(name, order, run)
            return run

        return register

    def names(self) -> list[str]:
        return [t.name for t in self._ordered()]

    def _ordered(self) -> list[TaskDef]:
        return sorted(self._tasks.values(), key=lambda t: (t.order, t.name))

    async def run(self, services: Any, now: datetime) -> dict[str, dict[str, Any]]:
        report: dict[str, dict[str, Any]] = {}
        for task in self._ordered():
            try:
                report[task.name] = await task.run(services, now)
            except ApiError as exc:
                report[task.name] = {"error": exc.code.value}
                log.warning("maintenance.task_failed", task=task.name, error=exc.code.value)
            except Exception as exc:  # one broken task must not stop the others
                report[task.name] = {"error": type(exc).__name__}
                log.exception("maintenance.task_failed", task=task.name)
        return report


MAINTENANCE = Maintenance()


def describe(report: dict[str, dict[str, Any]]) -> str:
    """One line for the answer's description: `task: key=value …; task: …`."""
    parts = []
    for name, values in report.items():
        words = " ".join(f"{key}={_word(value)}" for key, value in values.items() if value not in ("", [], None))
        parts.append(f"{name}: {words}" if words else name)
    return "; ".join(parts)


def _word(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)

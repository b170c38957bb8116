"""The simulator's own account of executor memory, kept from the decisions it executes.

It never reads the core's pools, so a core that breaks the rules (loads over budget, unloads an
expert while a batch runs on it, runs an expert that is not loaded) is caught here even when the
core's own bookkeeping would not notice. Each broken rule is one line in ``violations``.
"""

from __future__ import annotations

from collections.abc import Mapping

LOADING, READY, UNLOADING = "loading", "ready", "unloading"


class MemoryLedger:
    def __init__(self, budgets: Mapping[str, int]) -> None:
        self.budgets = dict(budgets)
        self.held: dict[str, dict[str, tuple[str, int]]] = {n: {} for n in budgets}  # state, bytes
        self.weights = {n: 0 for n in budgets}
        self.activations = {n: 0 for n in budgets}
        self.running: dict[tuple[str, str], int] = {}
        self.peak = {n: 0 for n in budgets}
        self.violations: list[str] = []

    def used(self, ex: str) -> int:
        return self.weights[ex] + self.activations[ex]

    def resident(self) -> int:
        """(executor, expert) pairs loaded or loading."""
        return sum(1 for h in self.held.values() for st, _ in h.values() if st in (LOADING, READY))

    def reset_peaks(self) -> None:
        self.peak = {n: self.used(n) for n in self.budgets}

    def _check(self, ex: str, now: float, what: str) -> None:
        used = self.used(ex)
        self.peak[ex] = max(self.peak[ex], used)
        if used > self.budgets[ex]:
            self.violations.append(f"{ex}: {used} B used > budget {self.budgets[ex]} B after {what} at {now}")

    # ---- decisions and their confirmations ----------------------------------------------------
    def load(self, ex: str, expert: str, nbytes: int, now: float) -> None:
        if expert in self.held[ex]:
            self.violations.append(f"{expert} loaded on {ex} while {self.held[ex][expert][0]} at {now}")
            return
        self.held[ex][expert] = (LOADING, nbytes)
        self.weights[ex] += nbytes
        self._check(ex, now, f"loading {expert}")

    def load_done(self, ex: str, expert: str, ok: bool) -> None:
        st, nbytes = self.held[ex][expert]
        if ok:
            self.held[ex][expert] = (READY, nbytes)
        else:
            del self.held[ex][expert]
            self.weights[ex] -= nbytes

    def unload(self, ex: str, expert: str, now: float) -> None:
        if self.running.get((ex, expert), 0) > 0:
            self.violations.append(f"{expert} evicted from {ex} while a batch runs on it at {now}")
        entry = self.held[ex].get(expert)
        if entry is None or entry[0] != READY:
            state = "not loaded" if entry is None else entry[0]
            self.violations.append(f"{expert} unloaded from {ex} while {state} at {now}")
            return
        self.held[ex][expert] = (UNLOADING, entry[1])

    def unload_done(self, ex: str, expert: str) -> None:
        entry = self.held[ex].pop(expert, None)
        if entry is not None:
            self.weights[ex] -= entry[1]

    def dispatch(self, ex: str, expert: str, act_bytes: int, now: float) -> None:
        entry = self.held[ex].get(expert)
        if entry is None or entry[0] != READY:
            state = "not loaded" if entry is None else entry[0]
            self.violations.append(f"{expert} run on {ex} while {state} at {now}")
        key = (ex, expert)
        self.running[key] = self.running.get(key, 0) + 1
        self.activations[ex] += act_bytes
        self._check(ex, now, f"dispatching {expert}")

    def batch_done(self, ex: str, expert: str, act_bytes: int) -> None:
        self.running[(ex, expert)] -= 1
        self.activations[ex] -= act_bytes

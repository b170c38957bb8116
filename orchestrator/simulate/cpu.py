"""The host's cores, shared by loads and CPU batches (the simulator's CPU model; pure).

On a CPU-only box a load is CPU work (a model process starts, imports its runtime, builds a
session) and so is every batch of a CPU executor. When they together want more cores than the
box has, each gets less and takes longer: two loads at once while two executors compute do not
overlap the way an idle box's figures say. Measured on the 2-core bench board (issue 9): a load
alone takes ~0.23 CPU seconds in ~0.16 s (its process is briefly multi-threaded), its first batch
~0.03 s more than the steady one, and while serving with switches the box's cores were busy >90%
of the time; the simulator that gave each load a fixed time and overlapped compute for free
predicted +48..+77% over the real throughput of every switching policy.

Model (egalitarian processor sharing with per-job caps): each running job has CPU work left (CPU
seconds) and a cap (the cores it uses alone: a batch 1, its runtime runs one intra-op thread; a
load its ``load_cpu_s / load time alone``). While the caps sum to at most ``cores``, every job
runs at its cap (so alone, each takes what the profile measured on an idle box); beyond that,
every job's rate is scaled by the same factor ``cores / sum(caps)``. A job ends when its work is
done. Rates change only when a job starts or ends, so completion times are exact (piecewise
linear work), and ties end in the order the jobs started: a run is a pure function of its inputs.

A job of infinite work runs until it is removed (``remove``): the orchestrator's process watch,
which polls ``/proc`` for as long as a load is in flight, is one beside each load.
"""

from __future__ import annotations

from dataclasses import dataclass

#: CPU seconds below which a job counts as done (float rounding of work * rate)
EPS = 1e-12


@dataclass
class CpuJob:
    """One load or batch on the host's cores: ``work`` CPU seconds left, ``cap`` cores at most."""

    work: float
    cap: float
    payload: object
    started: float = 0.0


class CpuShare:
    """The running jobs on ``cores`` cores (module doc). Times are the caller's clock."""

    def __init__(self, cores: float) -> None:
        if cores <= 0:
            raise ValueError("cores must be > 0")
        self.cores = float(cores)
        self.jobs: list[CpuJob] = []
        self.now = 0.0
        #: CPU seconds done so far, over every job (for reports and tests)
        self.done_work = 0.0

    def scale(self) -> float:
        """The factor every job's cap is multiplied by now (1 while the cores suffice)."""
        total = sum(j.cap for j in self.jobs)
        return 1.0 if total <= self.cores else self.cores / total

    def advance(self, now: float) -> None:
        """Run every job from ``self.now`` to ``now`` at its current rate."""
        dt = now - self.now
        if dt < 0:
            raise ValueError(f"time went back: {now} < {self.now}")
        if dt > 0 and self.jobs:
            s = self.scale()
            for j in self.jobs:
                step = min(j.work, j.cap * s * dt)
                j.work -= step  # inf - finite stays inf
                self.done_work += step
        self.now = now

    def add(self, now: float, work: float, cap: float, payload: object) -> CpuJob:
        """Start a job at ``now`` (the others are advanced first: their rates change now)."""
        if work < 0 or cap <= 0:
            raise ValueError("a job needs work >= 0 and cap > 0")
        self.advance(now)
        job = CpuJob(work, cap, payload, now)
        self.jobs.append(job)
        return job

    def remove(self, now: float, job: CpuJob) -> None:
        """Stop ``job`` at ``now`` (the others are advanced first: their rates change now)."""
        self.advance(now)
        self.jobs = [j for j in self.jobs if j is not job]

    def next_end(self) -> float | None:
        """When the next job ends at the current rates (None: no job of finite work runs)."""
        finite = [j for j in self.jobs if j.work != float("inf")]
        if not finite:
            return None
        s = self.scale()
        return self.now + min(j.work / (j.cap * s) for j in finite)

    def pop_done(self, now: float) -> list[CpuJob]:
        """Advance to ``now`` and remove the jobs whose work is done, in the order they started."""
        self.advance(now)
        done = [j for j in self.jobs if j.work <= EPS * max(1.0, j.cap)]
        if done:
            self.jobs = [j for j in self.jobs if j not in done]
        return done

"""A deterministic discrete-event simulator that drives the pure core on a simulated clock."""

from orchestrator.simulate.engine import SimResult, Simulation, simulate
from orchestrator.simulate.workload import PAPER_TASKS, TaskSpec, Workload, build_workload

__all__ = ["PAPER_TASKS", "SimResult", "Simulation", "TaskSpec", "Workload", "build_workload", "simulate"]

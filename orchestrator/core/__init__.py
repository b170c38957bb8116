"""The pure CoServe core: dependency graph, expert manager, scheduling policies.

Nothing in this package reads a clock, sleeps, does I/O (beyond parsing YAML text handed to the
config loaders) or imports asyncio/grpc/tritonclient. Drivers (the simulator, later the asyncio
engine against Triton) tell the core what happened, passing ``now`` explicitly, and execute the
plain-data decisions it returns (``orchestrator.core.decisions``).
"""

from orchestrator.core.decisions import Complete, Decision, Dispatch, Load, Reject, Unload
from orchestrator.core.graph import DependencyGraph
from orchestrator.core.memory import ExpertPool, ExpertState, IllegalTransitionError
from orchestrator.core.policies import POLICIES, PolicySpec, get_policy
from orchestrator.core.profile import ArchCost, CostProfile
from orchestrator.core.scheduler import CoreScheduler, Request
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig, Switches

__all__ = [
    "POLICIES",
    "ArchCost",
    "Complete",
    "CoreScheduler",
    "CostProfile",
    "Decision",
    "DependencyGraph",
    "Dispatch",
    "ExecutorConfig",
    "ExpertPool",
    "ExpertState",
    "IllegalTransitionError",
    "Load",
    "PolicySpec",
    "Reject",
    "Request",
    "ServeConfig",
    "Switches",
    "Unload",
    "get_policy",
]

"""The pure CoServe core: dependency graph, expert manager, executor queues, scheduling policies.

Nothing in this package reads a clock, sleeps, does I/O (beyond parsing YAML text handed to the
config loaders) or imports asyncio/grpc/tritonclient. Drivers (the simulator, later the asyncio
engine against Triton) tell the core what happened, passing ``now`` explicitly, and execute the
plain-data decisions it returns (``orchestrator.core.decisions``).

The driver protocol (stable: every driver relies on it)
--------------------------------------------------------
::

    core = CoreScheduler(graph, serve_config, cost_profile)       # policy from the serve config
    core.initial_placement(now)            -> [Load, ...]     before serving (may be empty)
    core.on_arrival(request, now)          -> decisions       a request arrived
    core.on_load_done(executor, expert, now, ok=True) -> decisions   a load finished (or failed)
    core.on_unload_done(executor, expert, now)        -> decisions   the memory is really free
    core.on_batch_done(batch_id, now, verdicts)       -> decisions   a batch finished

Decisions are ``Load``, ``Unload``, ``Dispatch``, ``Complete`` and ``Reject``. The driver executes
them in list order and reports back:

- ``Load(executor, expert, tier, bytes)``: load the expert from ``tier`` ("disk" or "cpu" memory);
  call ``on_load_done`` once it is loaded (``ok=False`` if it failed). Until then it is LOADING and
  its bytes count against the executor's budget.
- ``Unload(executor, expert, reason)``: unload it; call ``on_unload_done`` once the memory is
  really free (its bytes count until then).
- ``Dispatch(batch_id, executor, expert, request_ids, stage)``: run one batch (stage 0: the
  preliminary classifier step; 1: the subsequent detector step); call ``on_batch_done`` with
  ``verdicts`` mapping request id -> True when the classifier's result calls for the detector.
  An executor runs one batch at a time; the expert is pinned (never unloaded) while it runs.
- ``Complete(request_id)`` / ``Reject(request_id, reason)``: answer the client. Every request ends
  in exactly one of them.

``now`` is the driver's clock in seconds; it must never go backwards. Calls are not reentrant:
one event at a time. The core never assumes how long anything takes (the cost profile gives its
predictions only).

Modules: ``graph`` (experts, dependencies, usage probabilities), ``memory`` (expert state machine,
pools, eviction rankings), ``expert_manager`` (pools + CPU cache tier; admits loads: OK / LATER /
NEVER), ``executor_queue`` (groups, arrangement, backlog, starvation guard), ``assign`` (queue
choice through the narrow ``ExecutorLoad`` view), ``placement`` (initial and idle re-placement),
``policies`` (the registry of named policies), ``features`` (beyond-paper on/off flags),
``layout`` (a policy's executors), ``serve_config``, ``profile``, ``scheduler`` (composes them).
"""

from orchestrator.core.decisions import Complete, Decision, Dispatch, Load, Reject, Unload
from orchestrator.core.features import Features
from orchestrator.core.graph import DependencyGraph
from orchestrator.core.memory import ExpertPool, ExpertState, IllegalTransitionError
from orchestrator.core.policies import POLICIES, PolicySpec, get_policy
from orchestrator.core.profile import ArchCost, CostProfile
from orchestrator.core.scheduler import CoreScheduler, Request
from orchestrator.core.serve_config import ExecutorConfig, ServeConfig

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
    "Features",
    "IllegalTransitionError",
    "Load",
    "PolicySpec",
    "Reject",
    "Request",
    "ServeConfig",
    "Unload",
    "get_policy",
]

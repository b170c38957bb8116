"""The engine: the asyncio shell that feeds requests to the pure core and executes its decisions on
a backend (the Triton adapter in production, a profile-timed fake in tests).

``orchestrator.engine.types`` holds the domain types the front end and the engine exchange (no
grpc, no tritonclient): requests, verdicts, status, and the ``InspectionService`` protocol the
front end calls.
"""

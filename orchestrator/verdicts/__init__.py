"""Traceability: the durable verdict log (``store``), the service that records before it answers
and answers retries from the record (``service``), the learned usage probabilities kept across
restarts (``usage``), the ``verdict_log:`` config block (``config``) and the wiring into
``coserve serve`` (``serving``). No grpc here: the front end sees an ``InspectionService``.
"""

"""The exporter: PyTorch experts -> ONNX -> a Triton model repository.

Modules (torch is imported only by the ones that need it, and only inside functions where the
CLI must stay cheap):

* ``zoo``        -- seeded ResNet-style classifiers and YOLO-style detectors, sized by weight bytes
* ``calibrate``  -- output-bias calibration against the synthetic board source
* ``export``     -- module -> single-file ONNX, checker, ORT-vs-torch parity; user factories/files
* ``repository`` -- model directories, complete ``config.pbtxt`` per target, manifest, ``coe.yaml``
* ``build``      -- the pipeline behind ``coserve export`` (process pool, skip unchanged experts)
  and ``coserve expert add``
* ``generate``   -- synthetic CoE definitions (``coserve coe generate``; no torch)
* ``cli``        -- the subcommands

The tensor contract (names, shapes, the detector's pass rule) lives in
``orchestrator.experts_io`` because the orchestrator interprets the outputs without torch.
"""

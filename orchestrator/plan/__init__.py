"""``coserve plan``: how many executors of each kind to run and how to split their memory.

Pure (no I/O; the CLI ``orchestrator.cli_plan`` reads and writes the files). Modules, one job each:

- ``memory``: the machine's raw bytes, the overheads coserve itself costs (from the cost profile or
  the preset, never from file sizes), and a ``Candidate`` layout turned into a serve config;
- ``evaluate``: the simulator on a candidate over the search seeds, with a budget of runs;
- ``paper``: the paper's method (BRIEF section 2): executor counts by trial, weak processors keep
  one max batch and give the rest to experts, strong ones search the number of resident experts
  with a shrinking window over the usage CDF;
- ``simulated``: a search driven by the simulator over counts, memory splits and features;
- ``result``: the outcome of both and the serve-config text with its comment block.
"""

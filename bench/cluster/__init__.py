"""Running bench beyond one machine: SLURM job submission (`slurm`) and a throwaway multi-node Ray
cluster on localhost for tests and benchmarks (`localray`).

The Ray side of a cluster run needs no code here: bench.cluster.connect joins `cluster.address` (or
RAY_ADDRESS), and every trial already carries its own CPUs and GPU fraction as Ray resources.
"""

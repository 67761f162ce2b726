"""Planning, torch-free: the run config schema, the machine, what fits it, and pre-flight."""

"""Running a stage safely: run directories and metrics, complete checkpoints, pre-emption, guards against non-finite
numbers, memory settings, and the processes of a distributed run."""

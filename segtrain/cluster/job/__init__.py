"""What runs inside a job: its plan and steps, staging, the walltime, nodes and the PBS environment."""

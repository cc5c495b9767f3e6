"""Plans out to what stock stacks read: host order, launcher and scheduler files, NCCL env, source ports, switch routes."""

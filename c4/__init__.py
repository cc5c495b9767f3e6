"""C4: communication-driven observability and fault diagnosis for GPU clusters."""

__version__ = "0.1.0"

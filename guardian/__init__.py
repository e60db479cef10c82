"""Release Guardian: watches a rollout's metrics, judges them, and advances or rolls it back."""

__version__ = "0.1.0"

"""Strategy registry; each strategy is a small module registered by name."""
from headstart.strategies import finetune, linear_probe, two_stage  # noqa: F401 - registration by import
from headstart.strategies.registry import STRATEGIES, Strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "register_strategy"]

"""Strategy registry; each strategy is a small module registered by name.

A strategy imports its stages when it is built, not at import, so listing strategies (`headstart --help`)
loads no training code (Lightning, the backbones).
"""
from headstart.strategies import (  # noqa: F401 - registration by import
    auto, bitfit, finetune, l2_sp, linear_probe, lora, lp_ft, setfit, two_stage, ulmfit,
)
from headstart.strategies.registry import STRATEGIES, Strategy, register_strategy

__all__ = ["STRATEGIES", "Strategy", "register_strategy"]

from headstart.strategies.registry import register_strategy
from headstart.train.stages import FineTune


@register_strategy("finetune", "all layers and a fresh head trained together at one low learning rate")
def finetune() -> list:
    return [FineTune(discriminative=False)]

from headstart.strategies.registry import register_strategy


@register_strategy("finetune", "all layers and a fresh head trained together at one low learning rate")
def finetune() -> list:
    from headstart.train.stages import FineTune

    return [FineTune(discriminative=False)]

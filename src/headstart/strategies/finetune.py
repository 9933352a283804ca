from headstart.strategies.registry import register_strategy


@register_strategy("finetune", "all layers and a fresh head trained together: the body at one rate, --lr (no discriminative rates), the fresh head at the larger of --lr and --head-lr; warm-up + cosine")
def finetune() -> list:
    from headstart.train.stages import FineTune

    return [FineTune(discriminative=False)]

from headstart.strategies.registry import register_strategy


@register_strategy(
    "two-stage",
    "head on cached frozen features, then all layers fine-tuned with discriminative rates and warm-up + cosine",
)
def two_stage() -> list:
    from headstart.train.stages import FineTune, HeadOnFeatures

    return [HeadOnFeatures(required=False), FineTune(discriminative=True)]  # an untrained body: fine-tuning alone

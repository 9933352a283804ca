from headstart.strategies.registry import register_strategy


@register_strategy("linear-probe", "frozen backbone as a fixed feature extractor; the head trains on cached features")
def linear_probe() -> list:
    from headstart.train.stages import HeadOnFeatures

    return [HeadOnFeatures()]

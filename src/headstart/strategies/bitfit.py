from headstart.strategies.registry import register_strategy


@register_strategy("bitfit", "head on cached features, then only the body's biases and norm affine parameters train, with the head")
def bitfit() -> list:
    from headstart.train.stages import HeadOnFeatures
    from headstart.train.variants import BitFit

    return [HeadOnFeatures(), BitFit()]

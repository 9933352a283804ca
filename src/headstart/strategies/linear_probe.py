from headstart.strategies.registry import register_strategy
from headstart.train.stages import HeadOnFeatures


@register_strategy("linear-probe", "frozen backbone as a fixed feature extractor; the head trains on cached features")
def linear_probe() -> list:
    return [HeadOnFeatures()]

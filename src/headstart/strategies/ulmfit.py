from headstart.strategies.registry import register_strategy


@register_strategy(
    "ulmfit",
    "head on cached features, then gradual unfreezing (one more layer group per epoch from the top), rates divided "
    "by --ulmfit-factor per group down, slanted triangular schedule (Howard & Ruder)",
)
def ulmfit() -> list:
    from headstart.train.stages import HeadOnFeatures
    from headstart.train.variants import GradualUnfreeze

    return [HeadOnFeatures(), GradualUnfreeze(cut_frac=0.1, ratio=32.0)]

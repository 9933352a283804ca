from headstart.strategies.registry import register_strategy


@register_strategy(
    "l2-sp",
    "two-stage, but the body is pulled towards its pre-trained weights, --l2sp-alpha/2 * ||w - w0||^2, instead of "
    "decaying towards zero (Li et al. 2018); the head keeps weight decay",
)
def l2_sp() -> list:
    from headstart.train.stages import HeadOnFeatures
    from headstart.train.variants import L2SP

    return [HeadOnFeatures(), L2SP()]

from headstart.strategies.registry import register_strategy

LP_FT_LR_SCALE = 0.1  # one small rate for everything: the solved head is kept from distorting the features


@register_strategy(
    "lp-ft",
    "linear probe solved to convergence on cached features, then all layers and the head fine-tuned at one small "
    "uniform rate, lr x 0.1 (Kumar et al. 2022)",
)
def lp_ft() -> list:
    from headstart.train.stages import FineTune, HeadOnFeatures

    return [HeadOnFeatures(), FineTune(discriminative=False, lr_scale=LP_FT_LR_SCALE)]

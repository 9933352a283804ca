from headstart.strategies.registry import register_strategy


@register_strategy(
    "setfit",
    "the body fine-tuned on pairs (cosine similarity: same class 1, other class 0; Tunstall et al. 2022), then the "
    "head solved on its new features; for a few examples per class, any modality",
)
def setfit() -> list:
    from headstart.train.contrastive import ContrastiveBody
    from headstart.train.stages import HeadOnFeatures

    return [ContrastiveBody(), HeadOnFeatures()]

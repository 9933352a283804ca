from headstart.strategies.registry import register_strategy


@register_strategy(
    "lora",
    "head on cached features, then low-rank adapters (peft; --lora-rank) on attention q/v or pointwise convs train "
    "with the head; merged into the weights before saving, so the model loads like any other",
)
def lora() -> list:
    from headstart.train.stages import HeadOnFeatures
    from headstart.train.variants import LoRA

    return [HeadOnFeatures(), LoRA(merge=True)]

"""The training engine: a LightningModule, callbacks, the feature cache and the stages strategies compose."""

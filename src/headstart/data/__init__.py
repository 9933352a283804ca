"""Data loaders, one module per modality, plus splits and manifests."""

"""headstart: give a small labeled dataset a head start from a pre-trained model.

    import headstart as hs
    run = hs.fit("DATA", model="efficientnet_lite0")  # strategy="auto": picked from the data, the run says why
    run.evaluate("DATA/test"); run.predict(["img.jpg"]); run = hs.load("runs/ants")
    hs.rank("DATA", models=["efficientnet_lite0", "efficientnet_lite1"])  # before training: which body?
    hs.pretrain("UNLABELED")  # the body continues its pre-training on unlabeled inputs; fit(..., model="run:OUT")
    hs.compare("DATA")  # did transfer beat the same model from scratch and a classical baseline?
    hs.export("runs/ants")  # ONNX graph (body + head + softmax), checked with ONNX Runtime; predict(engine="onnx")
    hs.serve("runs/ants", port=8000)  # predictions over HTTP (FastAPI): POST /predict, /predict/files
    hs.monitor("runs/ants", "incoming/")  # have new inputs drifted from what the model was scored on?
    hs.update("runs/ants", "NEW_DATA")  # learn new data (new classes too), rehearsing the old; forgetting measured
"""
__version__ = "0.1.0"
__all__ = ["compare", "export", "fit", "load", "lr_find", "models", "monitor", "pretrain", "rank", "Run", "serve", "tune",
           "update", "__version__"]


def __getattr__(name: str):
    # The API is imported on first use, so `headstart --help` and `import headstart.cli` skip Lightning and friends.
    # No submodule may share a name in __all__: importing it would rebind that name to the module (why the fit
    # pipeline lives in fitting.py; tests/test_fit.py checks it).
    if name in __all__:
        from headstart import api

        return getattr(api, name)
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""Taking a trained run out of headstart: ONNX export (checked with ONNX Runtime) and ONNX Runtime inference."""
from headstart.deploy.onnx import OnnxRunner, export_onnx

__all__ = ["OnnxRunner", "export_onnx"]

"""ONNX Runtime sessions and sidecar checks; the taggers, the bird models, numpy front-ends."""

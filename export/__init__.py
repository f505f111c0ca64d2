"""Workstation tooling: turn the upstream models into the verified ONNX folders soundmond loads."""

"""The natural / industrial / other head: meta (what a head is),
onnx (what the daemon runs), skops (the training artefact)."""

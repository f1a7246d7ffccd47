"""One BentoML service per model; each runs batched inference on preprocessed uint8 images."""

"""The HTTP edge, model-free: errors, schemas, settings, image decoding and preprocessing, admission, middleware,
the runners' batcher and caches."""

"""The PyTorch engine (the default): timm classifiers, open_clip towers and linear heads, in eager mode or through
``torch.compile`` (``TORCH_COMPILE``), bf16 autocast on CUDA and exact fp32 on CPU."""

"""The PyTorch engine (the default): timm classifiers, open_clip towers and linear heads, in eager mode or through
``torch.compile`` (``TORCH_COMPILE``), in fp32 or bf16 (``PRECISION``; ``auto`` is bf16 on CUDA and on CPUs with
native bf16: see :class:`engines.torch.common.Precision`)."""

"""The OpenVINO engine (CPU): the EVA02 classifier and the CLIP image and text towers, converted from the same
store entries the torch engine reads, cached in the entry's folder, compiled in fp32 or bf16 (``PRECISION``)."""

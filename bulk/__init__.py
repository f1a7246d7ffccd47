"""Bulk scoring on Ray Data: species, aesthetic scores and CLIP embeddings for whole photo collections.

``python -m bulk SOURCE --out DIR --species --aesthetic --embedding l14`` reads a folder, a list file or a
Parquet/CSV column of paths (local, or any pyarrow/fsspec URI), decodes and preprocesses in CPU tasks with the
service's own code, runs the models in actor pools built with the runners' own load and inference functions,
and writes Parquet parts that ``--resume`` continues from.
"""

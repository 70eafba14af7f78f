"""The model core: the six files every saved checkpoint carries as remote code.

`configuration_cdtm` (CDTMConfig and the one check of its fields), `modeling_cdtm` (Cluster Center Attention, Eq. 1-8,
and the classifier), `backbones` (timm / open_clip tokens), `backbone_names` (the one check of a backbone name,
torch-free), `image_processing_cdtm` (the backbone's preprocessing and the one image decode) and `presets` (backbone
presets as data). They import nothing else of cdtm_hf, and relative imports only among themselves, so a checkpoint's
copies load where cdtm_hf is not installed. This `__init__` is not copied into
checkpoints.
"""

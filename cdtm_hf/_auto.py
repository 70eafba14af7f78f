"""transformers' Auto classes learn the CDTM classes as soon as both are imported, in either order (issue 16).

`import cdtm_hf` does not import transformers or torch: it takes a fraction of a second, so a command line can refuse
a bad argument before the seconds those imports cost. What importing the package promised stays true, though:
`AutoConfig`, `AutoModelForImageClassification`, `AutoImageProcessor` and `pipeline()` know a saved CDTM checkpoint
without `trust_remote_code`. [`register_auto_classes`] runs through post-import hooks (`wrapt`'s, the ecosystem's
implementation of PEP 369): the moment transformers is imported, or one of the three core modules that define the
classes finishes importing, whichever comes first; immediately where transformers is imported already.
"""

from __future__ import annotations

import importlib
import sys

import wrapt

#: the core modules that define the registered classes, and the class each must hold once its import has finished
CORE_CLASSES = {
    "cdtm_hf.core.configuration_cdtm": "CDTMConfig",
    "cdtm_hf.core.modeling_cdtm": "CDTMForImageClassification",
    "cdtm_hf.core.image_processing_cdtm": "CDTMImageProcessor",
}
_registered = False


def register_auto_classes(_module: object = None) -> bool:
    """Register the CDTM classes with transformers' Auto classes (idempotent); True once they are registered.

    A core module still being imported (it imported transformers, which called this) is left to finish: nothing
    is imported while one is, and its own post-import hook calls this again, which registers then.
    """
    global _registered
    if _registered:
        return True
    if any(_importing(name) for name in CORE_CLASSES):
        return False  # one of them is part-way through its import, further up this stack: wait for its hook
    modules = {name: importlib.import_module(name) for name in CORE_CLASSES}
    if _registered:
        return True  # the imports above ran these hooks again, and they registered
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    config, model, processor = (getattr(modules[name], cls) for name, cls in CORE_CLASSES.items())
    AutoConfig.register("cdtm", config, exist_ok=True)
    AutoModelForImageClassification.register(config, model, exist_ok=True)
    AutoImageProcessor.register(config, image_processor_classes={"pil": processor, "torchvision": processor},
                                exist_ok=True)
    # Saved checkpoints carry an auto_map and the code files, so they load with trust_remote_code=True
    # in a process that never installed cdtm_hf.
    config.register_for_auto_class()
    model.register_for_auto_class("AutoModelForImageClassification")
    processor.register_for_auto_class("AutoImageProcessor")
    _registered = True
    return True


def _importing(name: str) -> bool:
    """Whether core module `name` has started its import without finishing it (it lacks its class yet)."""
    module = sys.modules.get(name)
    return module is not None and not hasattr(module, CORE_CLASSES[name])


def install() -> None:
    """Call [`register_auto_classes`] when transformers or a defining core module is imported (done by `import
    cdtm_hf`; a hook on a module imported already runs at once)."""
    for name in ("transformers", *CORE_CLASSES):
        wrapt.register_post_import_hook(register_auto_classes, name)

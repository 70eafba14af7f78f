"""An image-classification pipeline that decodes 16-bit and float images with the package's one decode.

transformers' `ImageClassificationPipeline` turns a path or a PIL image into RGB with `convert("RGB")` before the
image processor sees it, which clips a 16-bit grayscale image (PIL mode `I;16`, common in radiology and microscopy
exports) to white. This pipeline opens the image (paths, URLs and base64 as transformers does) and decodes it with
`cdtm_hf.to_rgb_image`, which scales 16-bit and float images to 8 bits by their own range:

```python
>>> from transformers import pipeline
>>> from cdtm_hf.hub.pipeline import CDTMImageClassificationPipeline
>>> classify = pipeline("image-classification", model="out/vitb-sft", pipeline_class=CDTMImageClassificationPipeline)
>>> classify("scan_16bit.png")
```

Arrays (`np.ndarray`, `torch.Tensor`) go to the processor as they are, which decodes them the same way.
"""

from __future__ import annotations

import PIL.Image
import PIL.ImageOps
from transformers import ImageClassificationPipeline
from transformers.image_utils import load_image

from ..core.image_processing_cdtm import HIGH_BIT_DEPTH_MODES, to_rgb_image


def open_image(image: str | PIL.Image.Image, timeout: float | None = None) -> PIL.Image.Image:
    """A path, URL, base64 string or PIL image as 8-bit RGB, upright (EXIF), through `to_rgb_image`.

    Args:
        image (`str` or `PIL.Image.Image`): what transformers' `load_image` takes.
        timeout (`float`, *optional*): for a URL.
    """
    if isinstance(image, str) and not image.startswith(("http://", "https://", "data:image/")):
        try:
            image = PIL.Image.open(image)
        except (FileNotFoundError, IsADirectoryError, OSError):
            return load_image(image, timeout=timeout)  # base64 and transformers' own error messages
    elif isinstance(image, str):
        image = _open_remote(image, timeout)
    if isinstance(image, PIL.Image.Image) and image.mode in HIGH_BIT_DEPTH_MODES:
        return to_rgb_image(PIL.ImageOps.exif_transpose(image))
    return load_image(image, timeout=timeout)


def _open_remote(image: str, timeout: float | None) -> PIL.Image.Image:
    """A URL or data URI opened without the RGB conversion of `load_image` (its bytes, then PIL)."""
    import base64
    from io import BytesIO

    if image.startswith("data:image/"):
        return PIL.Image.open(BytesIO(base64.b64decode(image.split(",", 1)[1])))
    import httpx

    return PIL.Image.open(BytesIO(httpx.get(image, timeout=timeout, follow_redirects=True).content))


class CDTMImageClassificationPipeline(ImageClassificationPipeline):
    """`ImageClassificationPipeline` whose images are decoded by `cdtm_hf.to_rgb_image` (16-bit and float safe)."""

    def preprocess(self, image, timeout=None):
        if isinstance(image, (str, PIL.Image.Image)):
            image = open_image(image, timeout=timeout)
        return super().preprocess(image, timeout=timeout)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=5):
        """Scores from the logits divided by the model's `calibration_temperature` (`--calibrate`), where it has one
        (issue 19); the ranking of the classes is unchanged."""
        temperature = getattr(self.model.config, "calibration_temperature", None)
        if temperature:
            model_outputs = {**model_outputs, "logits": model_outputs["logits"] / float(temperature)}
        return super().postprocess(model_outputs, function_to_apply=function_to_apply, top_k=top_k)


__all__ = ["CDTMImageClassificationPipeline", "open_image"]

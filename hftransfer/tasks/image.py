"""Image classification: one label per image, from image folders, tables of image paths, or
datasets with image data (parquet, Hub)."""
from __future__ import annotations

import io
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import FORMATS, read_files, replace_column
from ..errors import HFTransferError
from ..models import processor_location
from ..registry import register_task
from .base import ClassificationTask, check_columns

logger = logging.getLogger("hftransfer")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Models whose position embeddings fix the input size: a processor that resizes elsewhere fails.
FIXED_SIZE_MODELS = ("vit", "deit", "beit", "data2vec-vision", "vit_msn", "vit_mae")


@dataclass
class Augment:
    """``task.augment``: random changes to training images (never to validation, test or
    predictions), e.g. ``{random_resized_crop: [0.8, 1.0], horizontal_flip: true}``."""

    random_resized_crop: list[float] | None = None
    """[min_scale, max_scale]: crop a random part covering this fraction of the image's area
    (aspect ratio 3/4 to 4/3), resized back to the image's size."""
    horizontal_flip: bool = False
    """Mirror half the images left to right (not for digits, text or anything with a handedness)."""

    def __post_init__(self) -> None:
        crop = self.random_resized_crop
        if crop is None:
            return
        numbers = isinstance(crop, list) and len(crop) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in crop)
        if not numbers or not 0 < crop[0] <= crop[1] <= 1:
            raise HFTransferError(
                "task.augment.random_resized_crop must be [min_scale, max_scale] with "
                f"0 < min_scale <= max_scale <= 1 (e.g. [0.8, 1.0]), got {crop!r}"
            )
        self.random_resized_crop = [float(v) for v in crop]

    @property
    def active(self) -> bool:
        return self.random_resized_crop is not None or self.horizontal_flip

    def __call__(self, image, rng: random.Random):
        from PIL import Image

        if self.random_resized_crop is not None:
            width, height = image.size
            box = _crop_box(width, height, self.random_resized_crop, rng)
            image = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
        if self.horizontal_flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


def _crop_box(width: int, height: int, scale: list[float], rng: random.Random) -> tuple[int, int, int, int]:
    """A random crop (left, top, right, bottom) of ``scale`` of the area, as torchvision's
    RandomResizedCrop picks it (falling back to the whole image)."""
    area = width * height
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, left + w, top + h
    return 0, 0, width, height


@register_task("image-classification")
class ImageClassification(ClassificationTask):
    """Classify images into labels (image folders, or tables of image paths / image data)."""

    auto_class_name = "AutoModelForImageClassification"
    pipeline_tag = "image-classification"
    peft_task_type = None  # PEFT has no image task type: the strategy saves the head beside the adapter
    head_prefixes = ("classifier",)
    # Images carry no text length to group batches by, and the model's inputs (pixel_values) are
    # made on the fly, so the Trainer must not drop the raw image column.
    training_defaults = {"remove_unused_columns": False, "train_sampling_strategy": "random"}
    input_kind = "image files"
    processor_auto_class = "AutoImageProcessor"
    """What loads this task's processor outside the kit (model cards: How to use)."""
    pipeline_processor_arg = "image_processor"
    """The ``transformers.pipeline`` argument the processor goes to."""

    @dataclass
    class Options:
        image_column: str = "image"
        """Column of image file paths (relative to the data file's folder) or image data."""
        label_column: str = "label"
        augment: Augment | None = None
        """Training-time augmentation: ``{random_resized_crop: [0.8, 1.0], horizontal_flip: true}``."""

        def __post_init__(self) -> None:
            check_columns(self, "image_column", "label_column")

    def __init__(self, options: Any):
        super().__init__(options)
        self.mode = "RGB"  # what images are converted to; set from the model by load_processor

    # --- data -------------------------------------------------------------------------------
    def read_split(self, entry, where, declared_format):
        path = Path(os.path.expanduser(entry))
        if declared_format is None and path.is_dir() and not any(
                p.suffix.lower() in FORMATS for p in _files(path)):
            return self.read_image_folder(path, where)
        # Relative image paths in a data file resolve against that file's folder.
        return read_files(entry, where, declared_format,
                          check=lambda ds, w, file: self.check_split(ds, w, file.parent))

    def read_image_folder(self, root: Path, where: str):
        """``root/LABEL/**/*.png``: one subfolder per label (walked in sorted order)."""
        import datasets

        exts = ", ".join(IMAGE_EXTENSIONS)
        label_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if loose:
            raise HFTransferError(
                f"{where}: {str(loose[0])!r} is outside a label folder; put every image in the "
                f"subfolder named after its label ({str(root)}/LABEL/{loose[0].name})"
            )
        if not label_dirs:
            raise HFTransferError(
                f"{where}: folder {str(root)!r} holds no label folders; give one subfolder per "
                f"label holding its images ({exts}), or data files (csv, json, jsonl, parquet)"
            )
        paths, labels = [], []
        for label_dir in label_dirs:
            images = sorted(p for p in _files(label_dir) if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise HFTransferError(
                    f"{where}: label folder {str(label_dir)!r} holds no image files ({exts}); "
                    "add its images or remove the folder"
                )
            paths += [str(p) for p in images]
            labels += [label_dir.name] * len(images)
        ds = datasets.Dataset.from_dict({self.options.image_column: paths,
                                         self.options.label_column: labels})
        return self.check_split(ds, where)

    def read_inputs(self, entry, where, declared_format):
        """A folder of images at any depth (its subfolders are not read as labels), or data files
        with the image column."""
        import datasets

        path = Path(os.path.expanduser(entry))
        if declared_format is None and path.is_dir() and not any(
                p.suffix.lower() in FORMATS for p in _files(path)):
            images = [str(p) for p in _files(path) if p.suffix.lower() in IMAGE_EXTENSIONS]
            if not images:
                raise HFTransferError(f"{where}: folder {entry!r} holds no image files "
                                      f"({', '.join(IMAGE_EXTENSIONS)})")
            return self.check_split(datasets.Dataset.from_dict({self.options.image_column: images}), where,
                                    labelled=False)
        return read_files(entry, where, declared_format,
                          check=lambda ds, w, file: self.check_split(ds, w, file.parent, labelled=False))

    def check_split(self, ds, where, base: Path | None = None, labelled: bool = True):
        """Check the image and label columns and that every image opens and passes PIL's
        integrity check (headers, checksums: cheap, ~0.2 ms an image); image paths are
        made absolute (relative ones resolve against ``base``, the data file's folder)."""
        import datasets

        column = self.require_column(ds, "image_column", where)
        if labelled:
            self.check_label_column(ds, where)
        if len(ds) == 0:
            raise HFTransferError(f"{where}: no rows")
        feature = ds.features[column]
        if isinstance(feature, datasets.Image):
            if feature.decode:  # keep the bytes: images decode when a batch is made
                ds = ds.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            paths = []
            for row, value in enumerate(ds[column], start=1):
                if value is None or not value.strip():
                    raise HFTransferError(
                        f"{where}: row {row} has no image path in column {column!r}; fill it in "
                        "or remove the row"
                    )
                path = Path(os.path.expanduser(value.strip()))
                if not path.is_absolute() and base is not None:
                    path = base / path
                if not path.is_file():
                    raise HFTransferError(f"{where}: row {row}: image file {str(path)!r} does not exist")
                paths.append(str(path.resolve()))
            ds = replace_column(ds, column, paths)
            ds = ds.cast_column(column, datasets.Image(decode=False))
        else:
            raise HFTransferError(
                f"{where}: column {column!r} (task.image_column) holds {_feature_name(feature)}, "
                "not image file paths or images"
            )
        row = 0
        for batch in ds.select_columns([column]).iter(batch_size=256):  # bounded memory
            for value in batch[column]:
                row += 1
                _verify(value, f"{where}: row {row} of column {column!r}")
        return ds

    # --- model inputs -----------------------------------------------------------------------
    def load_processor(self, location, spec, config):
        channels = getattr(config, "num_channels", 3)
        if channels not in (1, 3):
            raise HFTransferError(
                f"the model takes {channels}-channel images; image-classification feeds RGB (3) "
                "or greyscale (1) images"
            )
        self.mode = "L" if channels == 1 else "RGB"
        if location is None and not spec.processor:
            processor = default_image_processor(config)
        else:
            processor = load_image_processor(processor_location(location, spec), spec)
        check_processor_size(processor, config)
        return processor

    def decode(self, value: Any, where: str):
        """A PIL image in the model's mode from a path, bytes or ``{"bytes", "path"}`` value."""
        from PIL import Image, ImageOps

        try:
            if isinstance(value, dict):
                source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            elif isinstance(value, (bytes, bytearray)):
                source = io.BytesIO(value)
            elif isinstance(value, Image.Image):
                return ImageOps.exif_transpose(value).convert(self.mode)
            else:
                source = value
            with Image.open(source) as image:
                image.load()
                # As transformers' pipelines read images: EXIF orientation applied.
                return ImageOps.exif_transpose(image).convert(self.mode)
        except FileNotFoundError:
            raise HFTransferError(f"{where}: image file {_describe(value)!r} does not exist") from None
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad data
            raise HFTransferError(
                f"{where}: {_describe(value)!r} is not a readable image ({_reason(exc)})"
            ) from None

    def preprocess(self, ds, processor, labels, training=False):
        """``pixel_values`` (made per batch, augmented when ``training``) + ``labels``."""
        column = self.options.image_column
        label_ids = self.label_ids(ds, labels)
        out = ds.select_columns([column])
        if label_ids is not None:
            out = out.add_column("labels", label_ids)
        augment = self.options.augment if training and self.options.augment is not None \
            and self.options.augment.active else None
        rng = random  # seeded by transformers.set_seed; reseeded per dataloader worker by torch

        def transform(batch):
            images = [self.decode(v, f"column {column!r}") for v in batch[column]]
            if augment is not None:
                images = [augment(image, rng) for image in images]
            enc = processor(images=images, return_tensors="np")
            result = {"pixel_values": list(enc["pixel_values"])}
            if "labels" in batch:
                result["labels"] = batch["labels"]
            return result

        return out.with_transform(transform)

    def collator(self, processor):
        return collate_images

    def logits(self, model, processor, inputs, batch_size=32):
        """Inputs are image file paths. Returns the logits [inputs, labels] in input order."""
        import torch

        images = []
        for item in inputs:
            path = Path(os.path.expanduser(str(item)))
            if not path.is_file():
                raise HFTransferError(f"predict: image file {str(item)!r} does not exist")
            images.append(self.decode(str(path), "predict"))
        param = next(model.parameters())
        model.eval()
        rows = []
        for start in range(0, len(images), batch_size):
            enc = processor(images=images[start:start + batch_size], return_tensors="pt")
            with torch.no_grad():
                rows.append(model(pixel_values=enc["pixel_values"].to(param.device, param.dtype)).logits.float().cpu())
        return torch.cat(rows) if rows else torch.zeros(0, model.config.num_labels)


def collate_images(features: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np
    import torch

    batch = {"pixel_values": torch.from_numpy(np.stack([np.asarray(f["pixel_values"]) for f in features]))}
    if "labels" in features[0]:
        batch["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
    return batch


# --------------------------------------------------------------------------- processors


def load_image_processor(location: str, spec: Any):
    """``AutoImageProcessor`` from a directory or Hub id, with a one-line error."""
    from transformers import AutoImageProcessor

    name = spec.processor or spec.name_or_path
    path = Path(location)
    if path.is_dir() and not (path / "preprocessor_config.json").exists():
        raise HFTransferError(
            f"model {name!r} has no image processor (preprocessor_config.json); save one next "
            "to the weights (image_processor.save_pretrained(DIR)) or set model.processor"
        )
    try:
        return AutoImageProcessor.from_pretrained(
            location, revision=None if spec.processor else spec.revision,
            trust_remote_code=spec.trust_remote_code,
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HFTransferError(
            f"model {name!r} has no usable image processor: {message} (offline? use a local directory)"
        ) from None


def default_image_processor(config: Any):
    """The default image processor of ``config.model_type``, sized to ``config.image_size``
    (and ``num_channels``): what a random-init model from ``model.config`` is fed."""
    from transformers.models.auto.image_processing_auto import (
        IMAGE_PROCESSOR_MAPPING_NAMES,
        get_image_processor_class_from_name,
    )
    from transformers.utils import is_torchvision_available

    model_type = config.model_type
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type) or {}
    # The backend AutoImageProcessor picks when the run is reloaded: torchvision if installed.
    order = ("torchvision", "pil") if is_torchvision_available() else ("pil", "torchvision")
    cls = None
    for backend in order + tuple(b for b in names if b not in order):
        name = names.get(backend)
        candidate = get_image_processor_class_from_name(name) if name else None
        if candidate is not None and not getattr(candidate, "is_dummy", False):
            cls = candidate
            break
    if cls is None:
        raise HFTransferError(
            f"transformers has no image processor for model type {model_type!r}; set "
            "model.processor to a directory or Hub id that holds one"
        )
    try:
        defaults = cls()
        kwargs: dict[str, Any] = {}
        size = _image_size(config)
        if size is not None:
            h, w = size
            default_size = dict(getattr(defaults, "size", None) or {})
            if "height" in default_size:
                kwargs["size"] = {"height": h, "width": w}
            elif "shortest_edge" in default_size:
                kwargs["size"] = {"shortest_edge": min(h, w)}
            if getattr(defaults, "crop_size", None):
                kwargs["crop_size"] = {"height": h, "width": w}
        channels = getattr(config, "num_channels", 3)
        mean, std = getattr(defaults, "image_mean", None), getattr(defaults, "image_std", None)
        if isinstance(mean, (list, tuple)) and len(mean) != channels:
            kwargs["image_mean"] = [sum(mean) / len(mean)] * channels
            kwargs["image_std"] = [sum(std) / len(std)] * channels
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise HFTransferError(
            f"cannot build the {cls.__name__} of model type {model_type!r}: "
            f"{str(exc).splitlines()[0]}; set model.processor"
        ) from None


def _image_size(config: Any) -> tuple[int, int] | None:
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def check_processor_size(processor: Any, config: Any) -> None:
    """Models with fixed position embeddings fail on other sizes: say so before training."""
    expected = _image_size(config)
    if expected is None or getattr(config, "model_type", None) not in FIXED_SIZE_MODELS:
        return
    size = None
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop and "height" in crop:
        size = (crop["height"], crop["width"])
    elif getattr(processor, "do_resize", False) and "height" in (getattr(processor, "size", None) or {}):
        size = (processor.size["height"], processor.size["width"])
    if size is not None and tuple(size) != expected:
        raise HFTransferError(
            f"the image processor makes {size[0]}x{size[1]} images but the model takes "
            f"{expected[0]}x{expected[1]} (config image_size); use the model's own processor "
            "(model.processor) or a model of that size"
        )


# --------------------------------------------------------------------------- helpers


def _files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return sorted(out)


def _verify(value: dict[str, Any], where: str) -> None:
    """Raise unless the image (path or bytes) opens and passes PIL's integrity check: cheap,
    it reads headers and checksums without decoding the pixels."""
    import warnings

    from PIL import Image

    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        if source is None:
            raise HFTransferError(f"{where} is empty; fill it in or remove the row")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(source) as image:
                image.verify()
    except HFTransferError:
        raise
    except FileNotFoundError:
        raise HFTransferError(f"{where}: image file {_describe(value)!r} does not exist") from None
    except Exception as exc:
        raise HFTransferError(
            f"{where}: {_describe(value)!r} is not a readable image ({_reason(exc)}); "
            "replace or remove it"
        ) from None


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "embedded image bytes")
    if isinstance(value, (bytes, bytearray)):
        return "embedded image bytes"
    return str(value)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _feature_name(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{dtype} values" if dtype else type(feature).__name__

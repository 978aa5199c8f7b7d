"""Image datasets: an ``image_dataset_from_directory``-style folder or a built-in default.

Images are decoded and resized once into memory (uint8), so training epochs on 2 CPU cores spend
their time in the network, not in JPEG decoding; the same decode/resize serves evaluation of the
Keras and TFLite models, so every stage is scored on identical inputs.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import PipelineError
from pipeline.core.labels import display_label, label_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # what folders of images may hold
BUILTIN_DATASETS = ("builtin:digits",)
DEFAULT_DATA = "builtin:digits"


@dataclass
class ImageSet:
    """Decoded, resized images (N, H, W, 3 uint8) with integer labels and class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    skipped: int = 0  # files that could not be decoded (corrupt or not images)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.class_names)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode any PIL-readable image to RGB and resize it to ``size`` x ``size`` (bilinear)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise PipelineError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        # PIL refuses a header claiming billions of pixels with DecompressionBombError, which is no OSError
        raise PipelineError(f"cannot read image {path}: {exc}") from None


def list_image_folder(root: str | Path) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of a ``<class>/<image>`` folder; rejects layouts training cannot use.

    Only the two levels are read (never recursively, so a symlink loop cannot trap it); what does not
    fit them (sub-folders in class folders, links that lead nowhere or loop) is skipped with one warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise PipelineError(f"data folder not found: {root}")
    skipped: list[Path] = []
    class_dirs = []
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if entry.is_dir():
            class_dirs.append(entry)
        elif not entry.is_file():
            skipped.append(entry)
    if not class_dirs:
        raise PipelineError(f"{root} has no class folders; expected the layout <class>/<image>.jpg")
    for class_dir in class_dirs:
        problem = label_problem(class_dir.name)
        if problem:  # its name becomes a line of labels.txt and the models' metadata
            raise PipelineError(f"class folder '{display_label(class_dir.name)}' in {root} cannot name a class: "
                                f"{problem}; rename it")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        members = []
        for entry in sorted(p for p in class_dir.iterdir() if not p.name.startswith(".")):
            (members if entry.is_file() else skipped).append(entry)
        if not members:
            raise PipelineError(f"class folder {class_dir} is empty; remove it or add images")
        files += members
        labels += [label] * len(members)
    if len(class_dirs) < 2:
        raise PipelineError(f"{root} has a single class ({class_dirs[0].name}); a classifier needs at least 2")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of {root} that are not "
                      f"<class>/<image> files (sub-folders, broken or looping links), "
                      f"e.g. {display_label(str(skipped[0].relative_to(root)))}", stacklevel=2)
    return files, labels, [d.name for d in class_dirs]


def load_image_folder(root: str | Path, size: int, progress: bool = False) -> ImageSet:
    """Decode a class-per-folder tree; undecodable files are skipped and counted with a warning."""
    files, labels, class_names = list_image_folder(root)
    images = np.empty((len(files), size, size, 3), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[Path] = []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc=f"decoding {Path(root).name}", unit="img", leave=False)
    for i, path in enumerate(iterator):
        try:
            images[len(kept)] = load_image(path, size)
            kept.append(i)
        except PipelineError:
            skipped.append(path)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {root}, e.g. {skipped[0]}", stacklevel=2)
    labels_arr = np.asarray(labels, dtype=np.int64)[kept]
    missing = [name for c, name in enumerate(class_names) if not np.any(labels_arr == c)]
    if missing:
        raise PipelineError(f"class folder(s) {', '.join(missing)} in {root} hold no readable image")
    return ImageSet(images[: len(kept)], labels_arr, class_names, skipped=len(skipped))


def load_digits(size: int) -> ImageSet:
    """The UCI handwritten digits that scikit-learn ships (1,797 real 8x8 scans), as RGB images.

    It is the built-in default: real data, 10 classes, available offline on every install.
    """
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    gray = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in gray])
    rgb = np.repeat(images[..., None], 3, axis=-1)
    return ImageSet(rgb, digits.target.astype(np.int64), [str(d) for d in range(10)])


def mirror_safe(source: str | Path) -> bool:
    """Whether horizontal flips keep the class: mirrored digits are other glyphs."""
    return str(source) != "builtin:digits"


def load_dataset(source: str | Path, size: int, progress: bool = False) -> ImageSet:
    """``source`` is an image folder or the name of a built-in dataset (``builtin:digits``)."""
    if str(source) == "builtin:digits":
        return load_digits(size)
    if str(source).startswith("builtin:"):
        raise PipelineError(f"unknown built-in dataset {source!r}; available: {', '.join(BUILTIN_DATASETS)}")
    return load_image_folder(source, size, progress=progress)


def split(data: ImageSet, validation_fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """A stratified train/validation split, reproducible from ``seed``."""
    if not 0.0 < validation_fraction < 1.0:
        raise PipelineError(f"validation split must be between 0 and 1, got {validation_fraction}")
    rng = np.random.default_rng(seed)
    val_index: list[int] = []
    for c in range(len(data.class_names)):
        members = np.flatnonzero(data.labels == c)
        rng.shuffle(members)
        n_val = max(1, int(round(len(members) * validation_fraction)))
        if n_val >= len(members):
            raise PipelineError(
                f"class {data.class_names[c]!r} has {len(members)} image(s): too few for a validation split"
            )
        val_index += members[:n_val].tolist()
    is_val = np.zeros(len(data), dtype=bool)
    is_val[val_index] = True
    train, val = data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))
    train.skipped = data.skipped
    return train, val


def normalize(images: np.ndarray, mean: float = 127.5, std: float = 127.5) -> np.ndarray:
    """uint8 pixels to the float input every zoo net expects ([-1, 1] by default)."""
    return (images.astype(np.float32) - mean) / std

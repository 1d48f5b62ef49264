"""Image sources: scikit-learn's bundled digits, or a folder of image files.

A folder may hold images directly (no labels) or one subfolder per class (the subfolder
name is the class, as in torchvision's ImageFolder). Every image must have one size unless
``resize`` is given.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memaudit.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class ImageSet:
    """Images as uint8 (N, C, H, W), integer labels (N,) (-1 when unlabeled) and class names."""

    pixels: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])

    def take(self, indices) -> ImageSet:
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(self.pixels[indices], self.labels[indices], self.class_names, self.source)


def load_images(source: str, *, resize: int | None = None, grayscale: bool = False) -> ImageSet:
    """``digits`` (1797 8x8 grey digits, 0..16 scaled to 0..255) or a folder of images.

    Examples
    --------
    >>> images = load_images("digits")
    >>> images.pixels.shape, images.pixels.dtype, sorted(set(images.labels.tolist()))[:3]
    ((1797, 1, 8, 8), dtype('uint8'), [0, 1, 2])
    """
    if source == "digits":
        return _digits(resize)
    path = Path(source)
    if not path.is_dir():
        raise InputError(f"image source '{source}' is neither 'digits' nor a folder")
    return _folder(path, resize=resize, grayscale=grayscale)


def _digits(resize: int | None) -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    if resize and resize != 8:
        pixels = _resize_array(pixels, resize)
    return ImageSet(pixels, d.target.astype(np.int64), tuple(str(c) for c in range(10)), "digits")


def _folder(path: Path, *, resize: int | None, grayscale: bool) -> ImageSet:
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files = [(f, i) for i, c in enumerate(classes) for f in _image_files(c)]
        names = tuple(c.name for c in classes)
    else:
        files = [(f, -1) for f in _image_files(path)]
        names = ()
    if not files:
        raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    arrays = [_read_image(f, resize=resize, grayscale=grayscale) for f, _ in files]
    first = arrays[0].shape
    for (f, _), a in zip(files, arrays):
        if a.shape != first:
            raise InputError(
                f"{f}: image size {a.shape[2]}x{a.shape[1]} with {a.shape[0]} channels differs "
                "from "
                f"{files[0][0].name} ({first[2]}x{first[1]}, {first[0]} channels); pass --resize N "
                "(and --grayscale) to make them equal"
            )
    return ImageSet(
        np.stack(arrays), np.array([label for _, label in files], dtype=np.int64), names, str(path)
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(file: Path, *, resize: int | None, grayscale: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im = im.convert("L" if grayscale or im.mode in ("1", "L", "LA", "I", "I;16") else "RGB")
            if resize:
                im = im.resize((resize, resize), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{file}: not a readable image ({e})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)


def _resize_array(pixels: np.ndarray, size: int) -> np.ndarray:
    import torch

    x = torch.as_tensor(pixels, dtype=torch.float32)
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def balanced_subset(images: ImageSet, n: int, *, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` images with classes as equal as possible (unlabeled: a plain random
    choice).
    """
    if not 1 <= n <= len(images):
        raise InputError(f"asked for {n} training images but {images.source} has {len(images)}")
    rng = np.random.default_rng(seed)
    if (images.labels < 0).all():
        return np.sort(rng.choice(len(images), n, replace=False))
    by_class = [
        rng.permutation(np.flatnonzero(images.labels == c)) for c in np.unique(images.labels)
    ]
    picked: list[int] = []
    depth = 0
    while len(picked) < n:  # round robin over classes in a seeded order
        for c in rng.permutation(len(by_class)):
            if depth < len(by_class[c]) and len(picked) < n:
                picked.append(by_class[c][depth])
        depth += 1
    return np.sort(np.array(picked, dtype=np.int64))


def write_skewed_folder(
    images: ImageSet,
    out,
    *,
    few: int = 20,
    many: int = 20,
    many_images: int = 30,
    copies: int = 10,
    seed: int = 0,
) -> dict:
    """A class-folder dataset for detection: ``few`` classes of one image each, duplicated
    ``copies`` times (duplicated training images are the ones models memorize), and ``many`` classes
    of ``many_images`` distinct images of one source class each; no source image serves two classes.

    Also writes ``prompts.txt`` (class ids in the order a loader assigns them) and ``labels.txt``
    (1 for the one-image classes: memorized by design; ``memaudit diffusion memorization`` measures
    it).
    """
    from PIL import Image

    from memaudit.io.atomic import write_text_atomic

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new --out")
    rng = np.random.default_rng(seed)
    source_classes = (
        np.unique(images.labels[images.labels >= 0])
        if (images.labels >= 0).any()
        else np.array([-1])
    )
    pools = {c: list(rng.permutation(np.flatnonzero(images.labels == c))) for c in source_classes}
    groups = []
    for k in range(many):
        pool = pools[source_classes[k % len(source_classes)]]
        if len(pool) < many_images:
            raise InputError(
                f"{images.source} has too few images for {many} classes of {many_images}"
            )
        groups.append((f"many-{k:03d}", [pool.pop() for _ in range(many_images)]))
    for k in range(few):
        pool = pools[source_classes[k % len(source_classes)]]
        if not pool:
            raise InputError(f"{images.source} has too few images for {few} one-image classes")
        groups.append((f"few-{k:03d}", [pool.pop()] * copies))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, idx in groups:
        (tmp / name).mkdir(parents=True)
        for copy, i in enumerate(idx):
            img = images.pixels[i]
            Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(
                tmp / name / f"{i:05d}-{copy:03d}.png"
            )
    names = sorted(name for name, _ in groups)  # the loader's class order
    write_text_atomic(tmp / "prompts.txt", "".join(f"{i}\n" for i in range(len(names))))
    write_text_atomic(tmp / "labels.txt", "".join(f"{int(n.startswith('few'))}\n" for n in names))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return {
        "classes": len(names),
        "images": sum(len(i) for _, i in groups),
        "prompts": str(out / "prompts.txt"),
        "labels": str(out / "labels.txt"),
    }


def unique_images(pixels: np.ndarray) -> np.ndarray:
    """The distinct images, in first-seen order: copies of one image must not be each other's
    nearest neighbour.
    """
    flat = np.ascontiguousarray(pixels.reshape(len(pixels), -1))
    _, first = np.unique(flat, axis=0, return_index=True)
    return pixels[np.sort(first)]

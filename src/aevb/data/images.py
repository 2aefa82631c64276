"""A folder of images (PNG, JPEG, ... through Pillow) -> RawDataset of 8-bit pixels.

Layout: images directly in the folder (no labels), or one sub-folder per class (labels are the
sorted sub-folder names). Grayscale images give data of shape (H, W); if any image has colour,
all are read as RGB, shape (3, H, W) (channels first). All images must have one size unless
``image_size = "HxW"`` asks to resize (bilinear).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from aevb.data.bundled import RawDataset
from aevb.data.user import IMAGE_SUFFIXES

# Pixels per image read at most (5000 x 5000), checked from the header before decoding: a small
# compressed file can claim a huge image (a decompression bomb). Pillow refuses beyond ~179 M itself.
MAX_IMAGE_PIXELS = 25_000_000


def parse_size(image_size: str) -> tuple[int, int] | None:
    """"28x20" -> (28, 20) (rows, columns); "" -> None."""
    if not image_size:
        return None
    try:
        h, w = (int(v) for v in image_size.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"data.image_size = {image_size!r}: expected HxW with positive integers, e.g. 28x28") from None
    return h, w


def list_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """(files, labels or None, class names or None), in sorted order."""
    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    top = images_in(folder)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and images_in(d))
    if top and classes:
        raise ValueError(f"{folder}: holds both images ({top[0].name}) and class sub-folders ({classes[0].name}/); "
                         "put every image in a class sub-folder, or none")
    if classes:
        files, labels = [], []
        for label, d in enumerate(classes):
            found = images_in(d)
            files += found
            labels += [label] * len(found)
        return files, labels, [d.name for d in classes]
    if not top:
        raise ValueError(f"{folder}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} files, "
                         "directly or in one sub-folder per class)")
    return top, None, None


def read_image_folder(folder: Path, image_size: str = "") -> RawDataset:
    """Read every image in ``folder`` as uint8; see the module docstring for layout and sizes."""
    from PIL import Image, UnidentifiedImageError

    size = parse_size(image_size)
    files, labels, names = list_images(folder)
    images, first_size = [], None
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is lower
                im_file = Image.open(path)  # reads the header only
            with im_file as im:
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"{path}: the image is {height}x{width} pixels ({width * height:,}), more than the "
                                     f"{MAX_IMAGE_PIXELS:,} aevb reads per image (a small file claiming a huge image "
                                     "is a decompression bomb); resize the images before training")
                im.load()
                if im.mode.startswith(("I", "F")):
                    raise ValueError(f"{path}: {im.mode} images (16-bit or float pixels) are not supported; "
                                     "save them as 8-bit grayscale or RGB, or load them from a .npy array")
                colour = im.mode not in ("1", "L", "LA")
                im = im.convert("RGB" if colour else "L")
        except Image.DecompressionBombError as e:
            raise ValueError(f"{path}: the image is too large to decode safely ({e}); resize the images "
                             "before training") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: cannot read as an image ({e})") from None
        if size is not None:
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        elif first_size is None:
            first_size = (path, im.size)
        elif im.size != first_size[1]:
            (p0, (w0, h0)), (w1, h1) = first_size, im.size
            raise ValueError(f"images of different sizes: {p0} is {h0}x{w0} but {path} is {h1}x{w1} (rows x columns); "
                             "resize them all with --set data.image_size=HxW (e.g. 28x28)")
        images.append(np.asarray(im))
    if any(a.ndim == 3 for a in images):
        images = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in images]
        x = np.stack(images).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    else:
        x = np.stack(images)  # (N, H, W)
    return RawDataset(np.ascontiguousarray(x), None if labels is None else np.asarray(labels, np.int64),
                      tuple(x.shape[1:]), 255.0, 256, source=f"image folder {folder} ({len(files)} images)",
                      label_names=names)

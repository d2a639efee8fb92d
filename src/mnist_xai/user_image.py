"""A user's own image, prepared as MNIST's digits were, and how unlike the training digits it looks.

Preparation (LeCun et al., the MNIST database): decode with Pillow (PNG, JPEG, BMP or GIF; the first
frame; any mode becomes greyscale, transparent pixels become paper), invert dark-on-light images (a pen
on paper, detected from the border), stretch the contrast so that paper is 0 and the strongest ink 255,
crop to the ink's bounding box, scale it keeping its aspect ratio so that its longer side is 20 px
(anti-aliased), and paste it into 28 x 28 so that its centre of mass falls on pixel (14, 14).

Out-of-distribution score: the distance (in 14 x 14 pixel space) from the prepared image to its nearest
training image, as a percentile of the same distance for real test images. 50 is a typical test digit;
100 is further from every training image than any test digit in the reference sample.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_xai.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "BMP", "GIF")
SIZE = 28  # the model's input side
BOX = 20  # MNIST's digits fill a 20 x 20 box ...
CENTRE = 14.0  # ... whose centre of mass is at pixel (14, 14) of the 28 x 28 image (rows, columns from 0)
WORKING_SIDE = 1024  # larger images are first reduced to this longer side (a digit must span >= 2 % of it)
INK_FRACTION = 0.1  # a pixel is ink when above this fraction of the range from paper to the strongest ink
BLANK_RANGE = 16  # grey levels: an image whose contrast is below this has no ink at all


class ImageError(UserError):
    """An image file that cannot be used: missing, empty, not an image, truncated, or too large."""


@dataclass(frozen=True)
class Prepared:
    """The model's input and how it was obtained from the file."""

    image: np.ndarray  # uint8 [28, 28], light ink on black, as MNIST
    original: Image.Image  # the decoded first frame, RGB, as the user sees it (reduced if large)
    size: tuple[int, int]  # the file's width, height
    mode: str  # the file's Pillow mode (L, RGB, RGBA, P, ...)
    format: str  # PNG, JPEG, BMP or GIF
    inverted: bool  # dark ink on light paper was inverted
    blank: bool  # no ink found: the prepared image is all black
    ink_box: tuple[int, int, int, int]  # left, top, right, bottom of the ink in the (reduced) original


def open_image(path: str | Path) -> Image.Image:
    """The first frame of an image file, fully decoded. Every problem is an ImageError with one line:
    a missing or empty file, something that is not a PNG/JPEG/BMP/GIF, a truncated file, and a
    decompression bomb (Pillow's Image.MAX_IMAGE_PIXELS guard; its warning is treated as an error too)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} is missing or not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes): give a PNG, JPEG, BMP or GIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path, formats=FORMATS)
            image.seek(0)  # the first frame of an animated GIF or PNG
            image.info["file_size"] = image.size
            if image.format == "JPEG":  # decode at a reduced scale when the file is much larger than needed
                image.draft(image.mode, (WORKING_SIDE, WORKING_SIDE))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{path} is too large to decode safely ({_first_line(error)}); "
                         f"scale it down below {Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image this tool reads: give a PNG, JPEG, BMP or GIF") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # Pillow's ways of saying "broken file"
        raise ImageError(f"{path} is truncated or corrupt ({_first_line(error)}); re-save or re-export it") from None
    return image


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def to_grey(image: Image.Image) -> np.ndarray:
    """float32 [H, W] in 0-255. Colour becomes luma (ITU-R 601); 16-bit grey is scaled to 8 bits; transparent
    pixels become paper that contrasts with the ink: white under dark ink, black under light ink."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(image, dtype=np.float32)
        return grey * (255 / 65535) if grey.max(initial=0) > 255 else grey
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        grey = np.asarray(rgba.convert("L"), dtype=np.float32)
        if alpha.min() < 1:
            weight = alpha.sum()
            ink = float((grey * alpha).sum() / weight) if weight else 0.0
            paper = 255.0 if ink < 128 else 0.0
            grey = alpha * grey + (1 - alpha) * paper
        return grey
    return np.asarray(image.convert("L"), dtype=np.float32)


def border(grey: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels."""
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def prepare(image: Image.Image) -> Prepared:
    """The MNIST-style 28 x 28 input for a decoded image (see the module's docstring)."""
    size, mode, file_format = image.info.get("file_size", image.size), image.mode, image.format or ""
    image = ImageOps.exif_transpose(image)  # a phone photo's orientation tag: the digit upright
    if max(image.size) > WORKING_SIDE:  # anti-aliased, so thin strokes survive; keeps big photos fast
        image = image.copy()
        image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)
    grey = to_grey(image)
    paper = float(np.median(border(grey)))
    inverted = paper > 127.5  # dark ink on light paper: MNIST's digits are light on black
    if inverted:
        grey, paper = 255 - grey, 255 - paper
    strongest = float(grey.max())
    original = _display_copy(image)
    if strongest - paper < BLANK_RANGE:
        return Prepared(np.zeros((SIZE, SIZE), np.uint8), original, size, mode, file_format, inverted, True,
                        (0, 0, 0, 0))
    ink = np.clip((grey - paper) / (strongest - paper), 0, 1) * 255  # paper -> 0, the strongest ink -> 255
    rows = np.flatnonzero((ink > INK_FRACTION * 255).any(axis=1))
    columns = np.flatnonzero((ink > INK_FRACTION * 255).any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    digit = _scaled(ink[top:bottom, left:right])
    return Prepared(_centred(digit), original, size, mode, file_format, inverted, False,
                    (int(left), int(top), int(right), int(bottom)))


def _display_copy(image: Image.Image) -> Image.Image:
    """The image as shown on the page: RGB(A), transparency kept."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.fromarray(to_grey(image).round().astype(np.uint8))
    return image.convert("RGBA" if has_alpha else "RGB")


def _scaled(crop: np.ndarray) -> np.ndarray:
    """The crop scaled, keeping its aspect ratio, so that its longer side is BOX px (Lanczos, anti-aliased)."""
    height, width = crop.shape
    factor = BOX / max(height, width)
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = Image.fromarray(crop.astype(np.float32)).resize(new_size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0, 255)


def _centred(digit: np.ndarray) -> np.ndarray:
    """`digit` pasted into SIZE x SIZE, shifted by whole pixels so that its centre of mass is nearest to
    (CENTRE, CENTRE), never so far that ink would leave the image."""
    height, width = digit.shape
    mass = digit.sum()
    rows, columns = np.arange(height), np.arange(width)
    centre_row = (digit.sum(axis=1) @ rows) / mass if mass else (height - 1) / 2
    centre_column = (digit.sum(axis=0) @ columns) / mass if mass else (width - 1) / 2
    top = int(np.clip(round(CENTRE - centre_row), 0, SIZE - height))
    left = int(np.clip(round(CENTRE - centre_column), 0, SIZE - width))
    canvas = np.zeros((SIZE, SIZE), np.float32)
    canvas[top:top + height, left:left + width] = digit
    return canvas.round().astype(np.uint8)


def load_and_prepare(path: str | Path) -> Prepared:
    """open_image, then prepare."""
    return prepare(open_image(path))


# ---------------------------------------------------------------------------------------------------------
# Out-of-distribution score


@dataclass(frozen=True)
class OodScore:
    """How unlike the training images an image is: its distance to the nearest training image (14 x 14
    pixels, 0-1 grey levels), as a percentile of the same distance for `n_reference` real test images."""

    percentile: float  # 0-100: the share of reference test images whose nearest distance is smaller
    distance: float
    nearest: int  # index of the nearest training image
    reference_median: float  # the median nearest distance of the reference test images
    n_reference: int
    n_train: int


class NearestNeighbours:
    """Nearest training images by Euclidean distance in 14 x 14 pixel space (2 x 2 averages of the 28 x 28
    images: small shifts of a stroke cost less than at full resolution, and the search is 4x cheaper)."""

    def __init__(self, train_images: np.ndarray):
        self.points = _features(train_images)
        self.squared_norms = np.einsum("ij,ij->i", self.points, self.points)

    def query(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance, index) of each image's nearest training image."""
        queries = _features(images)
        nearest = (self.squared_norms[None, :] - 2 * queries @ self.points.T).argmin(axis=1)
        return np.linalg.norm(queries - self.points[nearest], axis=1), nearest  # exact, not via the expansion


def _features(images: np.ndarray) -> np.ndarray:
    """float32 [N, 196]: each image's 2 x 2 block means, in grey levels 0-1."""
    images = np.asarray(images, dtype=np.float32)
    pooled = images[:, 0::2, 0::2] + images[:, 1::2, 0::2] + images[:, 0::2, 1::2] + images[:, 1::2, 1::2]
    return pooled.reshape(len(images), -1) * np.float32(1 / (4 * 255))


def ood_scores(images: np.ndarray, train_images: np.ndarray, reference_images: np.ndarray) -> list[OodScore]:
    """The OOD score of each image (uint8 [N, 28, 28]) against the training images, with the nearest-image
    distances of `reference_images` (real test images, never in the training set) as the yardstick."""
    neighbours = NearestNeighbours(train_images)
    reference, _ = neighbours.query(reference_images)
    reference.sort()
    distances, nearest = neighbours.query(images)
    return [OodScore(percentile=100 * float(np.searchsorted(reference, distance, side="right")) / len(reference),
                     distance=float(distance), nearest=int(index), reference_median=float(np.median(reference)),
                     n_reference=len(reference), n_train=len(train_images))
            for distance, index in zip(distances, nearest, strict=True)]

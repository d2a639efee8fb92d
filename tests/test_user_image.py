"""Preparing a user's own image as MNIST was prepared, on real MNIST digits turned into "photos", and the
OOD score on digits, letters, noise and a blank page."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnist_xai.user_image import ImageError, load_and_prepare, ood_scores, prepare

ROWS, COLUMNS = np.mgrid[0:28, 0:28]


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    weights = image.astype(np.float64)
    return np.array([(weights * ROWS).sum(), (weights * COLUMNS).sum()]) / weights.sum()


def ink_box(image: np.ndarray, level: int = 0) -> tuple[int, int]:
    """(height, width) of the pixels above `level`."""
    rows, columns = np.flatnonzero((image > level).any(axis=1)), np.flatnonzero((image > level).any(axis=0))
    return rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1


def drawn(digit: np.ndarray, side: int = 300) -> Image.Image:
    """A real MNIST digit as a person would hand it in: 300 x 300, dark ink on white paper."""
    return Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def one_per_class(test_split):
    images, labels = test_split
    return [images[np.flatnonzero(labels == digit)[0]] for digit in range(10)]


def test_a_drawn_digit_is_prepared_like_the_mnist_digit_it_was_drawn_from(one_per_class, tmp_path):
    for digit, original in enumerate(one_per_class):
        path = tmp_path / f"{digit}.png"
        drawn(original).save(path)
        prepared = load_and_prepare(path)
        assert prepared.inverted and not prepared.blank and prepared.image.dtype == np.uint8
        assert prepared.image.shape == (28, 28)
        centre = centre_of_mass(prepared.image)
        assert np.abs(centre - 14).max() <= 0.5 + 1e-9, (digit, centre)  # whole-pixel shifts, as MNIST's
        assert np.abs(centre - centre_of_mass(original)).max() <= 1.0, (digit, centre, centre_of_mass(original))
        height, width = ink_box(prepared.image, level=25)
        original_height, original_width = ink_box(original, level=25)
        assert max(height, width) in (19, 20, 21), (digit, height, width)  # the 20 x 20 box, longer side ~20
        assert abs(height - original_height) <= 1 and abs(width - original_width) <= 1, (digit, height, width)
        # the same picture up to the whole-pixel shift that rounding the centre of mass may differ by
        shifted = [np.roll(prepared.image, (down, right), axis=(0, 1)) for down in (-1, 0, 1) for right in (-1, 0, 1)]
        similarity = max(np.corrcoef(image.ravel(), original.ravel())[0, 1] for image in shifted)
        assert similarity > 0.93, (digit, similarity)


def test_formats_modes_and_polarity_give_the_same_input(one_per_class, tmp_path):
    """PNG, JPEG, BMP, GIF (animated: the first frame); grey, colour, palette, 16-bit, transparent; light
    on dark or dark on light: the same digit, the same 28 x 28 input (within JPEG's loss)."""
    digit = one_per_class[3]
    reference = load_and_prepare(_save(drawn(digit), tmp_path / "reference.png")).image.astype(int)
    ink = np.asarray(drawn(digit))  # dark on light, 0-255
    blue_on_white = np.stack([ink, ink, np.full_like(ink, 255)], axis=2)  # blue ballpoint on paper
    transparent = np.zeros((300, 300, 4), np.uint8)
    transparent[..., 3] = 255 - ink  # black ink whose opacity carries the stroke, on a transparent sheet
    animated = tmp_path / "animated.gif"
    drawn(digit).save(animated, save_all=True, append_images=[Image.new("L", (300, 300), 0)], duration=100)
    cases = {
        "light-on-dark.png": Image.fromarray(255 - ink),
        "colour.jpg": Image.fromarray(blue_on_white),
        "grey.bmp": drawn(digit),
        "palette.gif": drawn(digit).convert("P"),
        "transparent.png": Image.fromarray(transparent),
        "sixteen-bit.png": Image.fromarray(ink.astype(np.uint16) * 257),
    }
    paths = {name: _save(image, tmp_path / name) for name, image in cases.items()}
    paths["animated.gif"] = animated
    for name, path in paths.items():
        prepared = load_and_prepare(path)
        difference = np.abs(prepared.image.astype(int) - reference)
        assert difference.mean() < 4 and np.percentile(difference, 99) < 60, (name, difference.mean())
        assert prepared.inverted == (name != "light-on-dark.png"), name  # transparent: dark ink on white


def _save(image: Image.Image, path):
    image.save(path)
    return path


def test_aspect_ratio_is_kept_and_a_small_photo_of_a_one_stays_thin(tmp_path):
    page = Image.new("L", (640, 480), 235)  # grey paper, not white: stretched to black
    ImageDraw.Draw(page).line([(320, 100), (330, 380)], fill=40, width=14)
    prepared = load_and_prepare(_save(page, tmp_path / "one.jpg"))
    height, width = ink_box(prepared.image, level=25)
    assert height in (19, 20, 21) and width <= 4
    assert prepared.image.max() > 200 and (prepared.image < 10).mean() > 0.9  # the grey paper is black


def test_a_large_photo_is_reduced_before_preparing(one_per_class, tmp_path):
    photo = drawn(one_per_class[5], side=3000)
    prepared = load_and_prepare(_save(photo, tmp_path / "large.jpg"))
    assert prepared.size == (3000, 3000) and max(prepared.original.size) == 1024
    assert np.abs(centre_of_mass(prepared.image) - 14).max() <= 0.5 + 1e-9


def test_a_blank_page_has_no_ink(tmp_path):
    for colour in (0, 128, 255):
        prepared = load_and_prepare(_save(Image.new("RGB", (200, 100), (colour,) * 3), tmp_path / f"{colour}.png"))
        assert prepared.blank and not prepared.image.any()


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels: Pillow's guard must refuse it before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind, message", [
    ("missing", "is missing"),
    ("empty", "is empty"),
    ("text", "is not an image this tool reads"),
    ("tiff", "is not an image this tool reads"),
    ("truncated", "is truncated or corrupt"),
    ("bomb", "is too large to decode safely"),
    ("bomb-warning", "is too large to decode safely"),
])
def test_bad_files_are_one_line_errors(kind, message, one_per_class, tmp_path):
    path = tmp_path / f"{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a picture\n")
    elif kind == "tiff":
        drawn(one_per_class[0]).save(path, format="TIFF")
    elif kind == "truncated":
        _save(drawn(one_per_class[0]), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "bomb":  # twice Pillow's limit: DecompressionBombError
        path.write_bytes(_bomb_png(20000, 20000))
    elif kind == "bomb-warning":  # over the limit but under twice it: Pillow only warns; we refuse
        path.write_bytes(_bomb_png(10000, 10000))
    with pytest.raises(ImageError) as raised:
        load_and_prepare(path)
    assert message in str(raised.value) and "\n" not in str(raised.value) and str(path) in str(raised.value)


def letter(text: str) -> Image.Image:
    page = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(page).text((150, 150), text, fill=0, font=ImageFont.load_default(size=220), anchor="mm")
    return page


def test_ood_score_ranks_letters_above_digits(mnist_dir, test_split, one_per_class):
    from mnist_xai import data

    train_images, _ = data.load_split(mnist_dir, "train")
    images, _ = test_split
    reference = images[np.random.default_rng(0).choice(len(images), 500, replace=False)]
    digits = [prepare(drawn(digit)).image for digit in one_per_class]
    letters = [prepare(letter(text)).image for text in "AKXW"]
    scores = ood_scores(np.stack(digits + letters + [train_images[7]]), train_images[:20000], reference)
    digit_scores = [s.percentile for s in scores[:10]]
    letter_scores = [s.percentile for s in scores[10:14]]
    assert np.median(digit_scores) < 60 and min(letter_scores) > 90, (digit_scores, letter_scores)
    assert scores[14].distance < 1e-6 and scores[14].percentile == 0 and scores[14].nearest == 7  # itself
    assert all(s.n_reference == 500 and s.n_train == 20000 for s in scores)

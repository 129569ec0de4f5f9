"""Drawing one synthetic CelebA face: :func:`render_image` turns a row of 40 labels into JPEG
bytes (178 x 218), the attributes in :data:`featstore.sources.synthetic.RENDERED_ATTRIBUTES`
visible, with pose, face size, lighting, background, colour cast and noise varying from image to
image. Every image depends on ``(seed, index)`` and its identity only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from featstore.sources.base import CELEBA_ATTRIBUTES, CELEBA_IMAGE_SIZE

_HEIGHT, _WIDTH = CELEBA_IMAGE_SIZE
# The face is drawn on a larger canvas, rotated, then cropped: no empty corners after rotation.
_CANVAS_W, _CANVAS_H = _WIDTH + 44, _HEIGHT + 40
_MAX_ANGLE = 7.0
_MAX_SHIFT = 5
# independent random streams per image
_STREAM_LABELS, _STREAM_RENDER, _STREAM_IDENTITY, _STREAM_LAYOUT = 0, 1, 2, 3

_HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "Black_Hair": (28, 24, 24),
    "Blond_Hair": (226, 192, 112),
    "Brown_Hair": (112, 72, 42),
    "Gray_Hair": (172, 172, 176),
}
_OTHER_HAIR = ((150, 62, 32), (186, 98, 52), (70, 52, 44), (128, 100, 84))
_SKIN_LIGHT, _SKIN_DARK, _SKIN_PALE = (226, 186, 158), (116, 76, 56), (244, 226, 214)
_HAT_COLOURS = (
    (30, 30, 36), (40, 50, 90), (150, 30, 30), (30, 90, 60), (200, 200, 205), (90, 60, 40),
    (20, 20, 20), (60, 60, 70),
)  # fmt: skip
_LIPSTICK = ((196, 22, 44), (170, 20, 70), (210, 60, 90), (140, 16, 36))
_SHADOW = ((110, 60, 150), (60, 90, 170), (120, 80, 60), (150, 70, 120))


def render_image(
    seed: int, index: int, labels: np.ndarray, identity: int, *, quality: int = 90
) -> bytes:
    """JPEG bytes of one synthetic face for a row of 40 labels (CELEBA_ATTRIBUTES order)."""
    rng = np.random.default_rng([seed, _STREAM_RENDER, index])
    traits = np.random.default_rng([seed, _STREAM_IDENTITY, identity]).random(8)
    lab = {a: bool(labels[i]) for i, a in enumerate(CELEBA_ATTRIBUTES)}
    canvas = _background(rng)
    _Face(canvas, rng, traits, lab).draw()

    # rotation about the canvas centre, shift and crop in one affine resampling (nearest
    # neighbour: Pillow's bilinear affine costs more than everything else together; the
    # photometric step smooths the result)
    angle = math.radians(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
    dx, dy = (float(v) for v in rng.integers(-_MAX_SHIFT, _MAX_SHIFT + 1, size=2))
    cos, sin = math.cos(angle), math.sin(angle)
    ccx, ccy = _CANVAS_W / 2, _CANVAS_H / 2
    ox, oy = dx - _WIDTH / 2, dy - _HEIGHT / 2  # output pixel -> offset from the canvas centre
    coeffs = (cos, sin, ccx + cos * ox + sin * oy, -sin, cos, ccy - sin * ox + cos * oy)
    img = canvas.transform((_WIDTH, _HEIGHT), Image.AFFINE, coeffs, resample=Image.NEAREST)
    blur = rng.uniform(2.2, 3.6)  # drawn either way: later draws do not depend on Blurry
    if lab["Blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    img = _photometric(img, rng)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _background(rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field: a few colours on a coarse grid, upsampled."""
    base = rng.uniform(30, 235, size=3)
    base = 0.55 * base + 0.45 * base.mean()  # muted, like most photographs
    grid = base + rng.normal(0, 24, size=(3, 3, 3))
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    return small.resize((_CANVAS_W, _CANVAS_H), Image.BILINEAR)


_NOISE_BANK: np.ndarray | None = None
_NOISE_PAD = 64


def _noise_bank() -> np.ndarray:
    """A fixed field of standard normal noise; each image reads it at a random offset."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        shape = (_HEIGHT + _NOISE_PAD, _WIDTH + _NOISE_PAD, 3)
        _NOISE_BANK = np.random.default_rng(20151201).standard_normal(shape, dtype=np.float32)
    return _NOISE_BANK


_ROWS = np.linspace(-0.5, 0.5, _HEIGHT, dtype=np.float32)
_COLS3 = np.repeat(np.linspace(-0.5, 0.5, _WIDTH, dtype=np.float32), 3)  # per pixel and channel


def _photometric(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lighting gradient, brightness, contrast, colour cast and sensor noise.

    Works on the (height, width * 3) view so every numpy loop is long and contiguous.
    """
    gx, gy = (np.float32(v) for v in rng.uniform(-0.45, 0.45, size=2))
    contrast = np.float32(rng.uniform(0.8, 1.15))
    cast = rng.uniform(0.93, 1.07, size=3).astype(np.float32) * np.float32(rng.uniform(0.8, 1.15))
    oy, ox = (int(v) for v in rng.integers(0, _NOISE_PAD, size=2))
    sigma = np.float32(rng.uniform(2.0, 7.0))
    cast3 = np.tile(cast, _WIDTH)
    light = np.multiply.outer(gy * _ROWS, cast3)
    light += (1.0 + gx * _COLS3) * cast3  # (1 + gx x + gy y) * cast
    arr = np.asarray(img, dtype=np.float32).reshape(_HEIGHT, _WIDTH * 3)
    arr[1:] += arr[:-1]  # 2 x 2 box filter: softens the aliased edges of the drawing
    arr[:, 3:] += arr[:, :-3]
    arr[0] *= 2  # the first row and column had nothing to add
    arr[:, :3] *= 2
    arr *= contrast * np.float32(0.25)  # contrast about mid-grey
    arr += np.float32(128.0) * (1 - contrast)
    arr *= light
    noise = _noise_bank()[oy : oy + _HEIGHT, ox : ox + _WIDTH].reshape(_HEIGHT, _WIDTH * 3)
    arr += noise * sigma
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8).reshape(_HEIGHT, _WIDTH, 3), "RGB")


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float = 12.0) -> tuple:
    c = np.asarray(colour, dtype=float) * rng.uniform(0.88, 1.12) + rng.normal(0, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _shade(colour: Sequence[int], factor: float, alpha: int | None = None) -> tuple:
    c = tuple(int(min(255, max(0, v * factor))) for v in colour[:3])
    return (*c, alpha) if alpha is not None else c


class _Face:
    """Draws one face on the canvas; coordinates in face units around the face centre."""

    def __init__(
        self, canvas: Image.Image, rng: np.random.Generator, traits: np.ndarray, lab: dict
    ) -> None:
        self.d = ImageDraw.Draw(canvas, "RGBA")
        self.rng = rng
        self.lab = lab
        self.traits = traits
        self.s = (1.1 + 0.16 * traits[0]) * rng.uniform(0.94, 1.06)
        self.cx = _CANVAS_W / 2 + rng.normal(0, 1.5)
        self.cy = _CANVAS_H / 2 + 6 + rng.normal(0, 1.5)
        male = lab["Male"]
        self.hw = 34 + 4 * traits[1] + (3 if male else 0) + (6 if lab["Chubby"] else 0)
        self.hh = 47 + 4 * traits[2]
        self.eye_dx = 14 + 2.5 * traits[3]
        # colours
        if lab["Pale_Skin"]:
            skin = _jitter(rng, _SKIN_PALE, 4)
        else:
            t = min(1.0, traits[4] ** 1.7 + rng.normal(0, 0.04))  # mostly light, some dark
            tone = [a + (b - a) * max(0.0, t) for a, b in zip(_SKIN_LIGHT, _SKIN_DARK)]
            skin = _jitter(rng, tone, 6)
        if not lab["Young"]:
            grey = sum(skin) / 3
            skin = tuple(int(0.8 * c + 0.2 * grey) for c in skin)
        self.skin = skin
        named = [c for a, c in _HAIR_COLOURS.items() if lab[a]]
        if named:
            hair = tuple(sum(c[i] for c in named) / len(named) for i in range(3))
        else:
            hair = _OTHER_HAIR[int(traits[5] * len(_OTHER_HAIR)) % len(_OTHER_HAIR)]
        self.hair = _jitter(rng, hair, 10)
        self.long_hair = (not lab["Bald"]) and rng.random() < (0.08 if male else 0.9)

    # coordinate helpers
    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.s * x, self.cy + self.s * y)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        x0, x1 = min(x0, x1), max(x0, x1)
        return [*self.p(x0, min(y0, y1)), *self.p(x1, max(y0, y1))]

    def w(self, width: float) -> int:
        return max(1, round(width * self.s))

    def draw(self) -> None:
        lab = self.lab
        self.body()
        if self.long_hair:
            self.hair_back()
        self.ears()
        self.face()
        if lab["5_o_Clock_Shadow"]:
            self.stubble()
        if not lab["No_Beard"] and not (lab["Goatee"] or lab["Mustache"]):
            self.beard()
        if not lab["Young"]:
            self.wrinkles()
        if lab["Rosy_Cheeks"]:
            self.cheeks()
        self.eyes()
        self.brows()
        self.nose()
        if lab["Goatee"]:
            self.goatee()
        self.mouth()
        if lab["Mustache"]:
            self.mustache()
        self.hair_top()
        if lab["Eyeglasses"]:
            self.glasses()
        if lab["Wearing_Hat"]:
            self.hat()

    # parts, back to front
    def body(self) -> None:
        rng, d, lab = self.rng, self.d, self.lab
        shirt = _jitter(rng, rng.uniform(30, 220, size=3), 0)
        d.ellipse(self.box(-95, 78, 95, 190), fill=shirt)
        d.rectangle(self.box(-15, 20, 15, 88), fill=_shade(self.skin, 0.92))
        d.ellipse(self.box(-15, 78, 15, 96), fill=_shade(self.skin, 0.92))
        if lab["Wearing_Necktie"]:
            white = _jitter(rng, (235, 235, 235), 6)
            d.polygon(
                [
                    self.p(-26, 80),
                    self.p(0, 104),
                    self.p(26, 80),
                    self.p(14, 118),
                    self.p(-14, 118),
                ],
                fill=white,
            )
            tie = _jitter(rng, _HAT_COLOURS[int(rng.integers(len(_HAT_COLOURS)))], 10)
            d.polygon(
                [
                    self.p(-6, 94),
                    self.p(6, 94),
                    self.p(3, 100),
                    self.p(10, 150),
                    self.p(0, 160),
                    self.p(-10, 150),
                    self.p(-3, 100),
                ],
                fill=tie,
            )
        if lab["Wearing_Necklace"]:
            metal = _jitter(rng, (226, 190, 70) if rng.random() < 0.6 else (215, 215, 225), 8)
            d.arc(self.box(-22, 58, 22, 100), 20, 160, fill=metal, width=self.w(3))
            d.ellipse(self.box(-4, 96, 4, 104), fill=metal)

    def hair_back(self) -> None:
        hw, hh = self.hw, self.hh
        drop = 60 + 30 * self.traits[6]
        self.d.rounded_rectangle(
            self.box(-hw - 14, -hh - 10, hw + 14, drop), radius=self.w(26), fill=self.hair
        )

    def ears(self) -> None:
        hw, d = self.hw, self.d
        ear = _shade(self.skin, 0.9)
        for side in (-1, 1):
            x = side * (hw - 1)
            d.ellipse(self.box(x - 7, -14, x + 7, 12), fill=ear)
        if self.lab["Wearing_Earrings"]:
            metal = _jitter(
                self.rng, (232, 196, 60) if self.rng.random() < 0.7 else (225, 225, 235), 8
            )
            for side in (-1, 1):
                x = side * (hw + 1)
                d.ellipse(self.box(x - 5, 12, x + 5, 22), fill=metal)
                d.ellipse(self.box(x - 2, 15, x + 2, 19), fill=_shade(metal, 0.6))

    def face(self) -> None:
        hw, hh, d, lab = self.hw, self.hh, self.d, self.lab
        d.ellipse(self.box(-hw, -hh, hw, hh), fill=self.skin)
        if lab["Male"]:  # square jaw
            d.rounded_rectangle(self.box(-hw, -5, hw, hh - 2), radius=self.w(16), fill=self.skin)
        if lab["Double_Chin"]:
            d.arc(
                self.box(-18, hh - 14, 18, hh + 6),
                20,
                160,
                fill=_shade(self.skin, 0.75),
                width=self.w(2),
            )
        if lab["Bald"]:  # shine on the scalp
            d.ellipse(self.box(-14, -hh + 3, 8, -hh + 13), fill=(255, 255, 255, 70))

    def stubble(self) -> None:
        hw, hh = self.hw, self.hh
        self.d.chord(self.box(-hw, -hh, hw, hh), 10, 170, fill=(50, 45, 55, 70))

    def beard(self) -> None:
        hw, hh = self.hw, self.hh
        self.d.chord(self.box(-hw - 1, -hh - 2, hw + 1, hh + 4), 5, 175, fill=(*self.hair, 235))

    def wrinkles(self) -> None:
        line = _shade(self.skin, 0.68)
        d, w = self.d, self.w(1)
        for y in (-32, -27):
            d.arc(self.box(-16, y, 16, y + 8), 200, 340, fill=line, width=w)
        for side in (-1, 1):
            x = side * (self.eye_dx + 10)
            d.line([self.p(x, -10), self.p(x + side * 5, -13)], fill=line, width=w)
            d.line([self.p(x, -6), self.p(x + side * 5, -4)], fill=line, width=w)
            d.line([self.p(side * 9, 14), self.p(side * 15, 30)], fill=line, width=w)

    def cheeks(self) -> None:
        for side in (-1, 1):
            x = side * 21
            self.d.ellipse(self.box(x - 9, 6, x + 9, 20), fill=(235, 70, 90, 110))

    def eyes(self) -> None:
        d, lab, rng = self.d, self.lab, self.rng
        eh = 2.2 if lab["Narrow_Eyes"] else 4.2
        iris = _jitter(
            rng, ((70, 45, 25), (60, 90, 130), (80, 110, 70))[int(self.traits[7] * 3) % 3], 6
        )
        for side in (-1, 1):
            x = side * self.eye_dx
            if lab["Heavy_Makeup"]:
                shadow = _SHADOW[int(rng.integers(len(_SHADOW)))]
                d.ellipse(self.box(x - 11, -17, x + 11, -5), fill=(*shadow, 150))
            if lab["Bags_Under_Eyes"]:
                d.arc(
                    self.box(x - 8, -8, x + 8, 2),
                    20,
                    160,
                    fill=(*_shade(self.skin, 0.6), 200),
                    width=self.w(2),
                )
            d.ellipse(self.box(x - 8, -8 - eh, x + 8, -8 + eh), fill=(240, 240, 236))
            r = min(3.2, eh)
            d.ellipse(self.box(x - r, -8 - r, x + r, -8 + r), fill=iris)
            d.ellipse(self.box(x - 1.3, -9.3, x + 1.3, -6.7), fill=(10, 10, 10))
            if lab["Heavy_Makeup"]:
                d.arc(
                    self.box(x - 9, -9 - eh, x + 9, -7 + eh),
                    180,
                    360,
                    fill=(10, 10, 10),
                    width=self.w(2),
                )

    def brows(self) -> None:
        d, lab = self.d, self.lab
        colour = _shade(self.hair, 0.75) if sum(self.hair) > 360 else self.hair
        width = self.w(4.5 if lab["Bushy_Eyebrows"] else 2)
        for side in (-1, 1):
            x0, x1 = side * (self.eye_dx - 8), side * (self.eye_dx + 9)
            if lab["Arched_Eyebrows"]:
                mid = side * (self.eye_dx + 2)
                pts = [self.p(x0, -17), self.p(mid, -23), self.p(x1, -18)]
            else:
                pts = [self.p(x0, -18), self.p(x1, -19)]
            d.line(pts, fill=colour, width=width, joint="curve")

    def nose(self) -> None:
        d = self.d
        big = self.lab["Big_Nose"]
        nw, nl = (9, 17) if big else (5, 13)
        dark = _shade(self.skin, 0.78)
        d.line([self.p(-2, -4), self.p(-nw * 0.6, nl)], fill=dark, width=self.w(1.5))
        d.ellipse(self.box(-nw, nl - 2, nw, nl + 4), fill=_shade(self.skin, 0.86))
        d.ellipse(self.box(-nw + 1, nl, -nw + 4, nl + 3), fill=_shade(self.skin, 0.55))
        d.ellipse(self.box(nw - 4, nl, nw - 1, nl + 3), fill=_shade(self.skin, 0.55))

    def goatee(self) -> None:
        hh = self.hh
        self.d.ellipse(self.box(-10, hh - 20, 10, hh + 1), fill=self.hair)
        self.d.rectangle(self.box(-4, 33, 4, hh - 10), fill=self.hair)

    def mustache(self) -> None:
        self.d.polygon(
            [
                self.p(-17, 27),
                self.p(-10, 20),
                self.p(0, 22),
                self.p(10, 20),
                self.p(17, 27),
                self.p(10, 25),
                self.p(0, 27),
                self.p(-10, 25),
            ],
            fill=self.hair,
        )

    def mouth(self) -> None:
        d, lab, rng = self.d, self.lab, self.rng
        if lab["Wearing_Lipstick"]:
            lips = _jitter(rng, _LIPSTICK[int(rng.integers(len(_LIPSTICK)))], 8)
        else:
            lips = tuple(
                int(0.75 * c + 0.25 * t) for c, t in zip(_shade(self.skin, 0.8), (170, 80, 80))
            )
        lip = 4.5 if lab["Big_Lips"] else 2.5
        dark, teeth = (45, 15, 20), (245, 242, 232)
        y = 31
        if lab["Smiling"]:
            hw = 21
            for side in (-1, 1):  # raised cheeks catch the light
                d.ellipse(
                    self.box(side * 21 - 9, 2, side * 21 + 9, 16),
                    fill=(*_shade(self.skin, 1.2), 160),
                )
            d.chord(
                self.box(-hw - lip, y - 10 - lip / 2, hw + lip, y + 14 + lip), 0, 180, fill=lips
            )
            d.chord(self.box(-hw, y - 10, hw, y + 14), 0, 180, fill=teeth)
            if lab["Mouth_Slightly_Open"]:  # a dark gap below the upper teeth
                d.chord(self.box(-hw + 5, y - 2, hw - 5, y + 11), 0, 180, fill=dark)
            d.line(
                [self.p(-hw - 1, y + 2), self.p(hw + 1, y + 2)], fill=lips, width=self.w(lip / 1.5)
            )
            line = _shade(self.skin, 0.7)
            for side in (-1, 1):  # smile lines
                d.arc(
                    self.box(side * 22 - 6, y - 14, side * 22 + 6, y + 6),
                    *((300, 60) if side > 0 else (120, 240)),
                    fill=line,
                    width=self.w(1.5),
                )
        else:
            hw = 12
            if lab["Mouth_Slightly_Open"]:
                d.ellipse(self.box(-hw - 1, y - 3 - lip, hw + 1, y + 5 + lip), fill=lips)
                d.ellipse(self.box(-hw + 3, y - 2, hw - 3, y + 4), fill=dark)
            else:
                d.ellipse(self.box(-hw, y - lip, hw, y + lip), fill=lips)
                d.line(
                    [self.p(-hw, y + 0.5), self.p(hw, y + 0.5)],
                    fill=_shade(lips, 0.55),
                    width=self.w(1),
                )

    def hair_top(self) -> None:
        d, lab, hw, hh = self.d, self.lab, self.hw, self.hh
        if lab["Bald"]:  # a fringe over the ears only
            for side in (-1, 1):
                x = side * hw
                d.chord(
                    self.box(x - 6, -24, x + 6, 6),
                    90 if side > 0 else 270,
                    270 if side > 0 else 90,
                    fill=self.hair,
                )
            return
        line = -hh + (3 if lab["Receding_Hairline"] else 13)  # the hairline: bottom of the cap
        d.chord(self.box(-hw - 4, -hh - 12, hw + 4, 2 * line + hh + 12), 180, 360, fill=self.hair)
        if lab["Sideburns"]:
            for side in (-1, 1):
                x = side * (hw - 3)
                d.rectangle(self.box(x, line - 6, x + side * 6, 10), fill=self.hair)
        elif self.long_hair:  # long hair frames the face
            for side in (-1, 1):
                x = side * hw
                d.rectangle(self.box(x, line - 6, x + side * 8, 30), fill=self.hair)
        if lab["Bangs"]:
            pts = [self.p(-hw + 2, line - 8)]
            teeth = 7
            for k in range(teeth + 1):
                x = -hw + 4 + k * (2 * hw - 8) / teeth
                pts.append(self.p(x, -22 if k % 2 == 0 else -26))
            pts.append(self.p(hw - 2, line - 8))
            d.polygon(pts, fill=self.hair)

    def glasses(self) -> None:
        d, rng = self.d, self.rng
        dark = rng.random() < 0.8
        frame = _jitter(rng, (20, 20, 24) if dark else (190, 160, 90), 8)
        sun = rng.random() < 0.12
        lens = (20, 20, 30, 210) if sun else (205, 220, 235, 70)
        width = self.w(4)
        for side in (-1, 1):
            x = side * self.eye_dx
            d.ellipse(self.box(x - 12, -18, x + 12, 2), fill=lens, outline=frame, width=width)
            d.line(
                [self.p(side * (self.eye_dx + 11), -10), self.p(side * (self.hw + 2), -8)],
                fill=frame,
                width=width,
            )
        d.arc(
            self.box(-self.eye_dx + 9, -13, self.eye_dx - 9, -3), 200, 340, fill=frame, width=width
        )

    def hat(self) -> None:
        d, rng, hw, hh = self.d, self.rng, self.hw, self.hh
        colour = _jitter(rng, _HAT_COLOURS[int(rng.integers(len(_HAT_COLOURS)))], 12)
        band = _shade(colour, 0.55)
        if rng.random() < 0.6:  # brimmed hat
            d.rounded_rectangle(
                self.box(-hw + 2, -hh - 30, hw - 2, -hh + 18), radius=self.w(14), fill=colour
            )
            d.rectangle(self.box(-hw + 2, -hh + 8, hw - 2, -hh + 17), fill=band)
            d.ellipse(self.box(-hw - 22, -hh + 12, hw + 22, -hh + 26), fill=colour)
            d.rectangle(self.box(-hw + 4, -hh + 26, hw - 4, -hh + 38), fill=(0, 0, 0, 90))
        else:  # knit cap down to the brows
            d.chord(self.box(-hw - 5, -hh - 22, hw + 5, -hh + 60), 180, 360, fill=colour)
            d.rectangle(self.box(-hw - 5, -hh + 12, hw + 5, -hh + 24), fill=band)

"""What every source reader returns: the images it lists, their labels, and per-image problems.

A reader only reads annotation files and the directory listing; it does not open images (the Spark
ingest job does that in parallel). Problems with the annotation files raise
:class:`featstore.errors.AnnotationError` (the job stops, nothing written); problems with single
images (listed but missing, present but not listed) are returned in ``problems`` so that the job
can record them in the errors table and go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

SPLITS: tuple[str, ...] = ("train", "val", "test")

# stage names used in errors tables
STAGE_LISTING = "listing"
STAGE_DECODE = "decode"


@dataclass(frozen=True)
class ImageProblem:
    """One image the job cannot use, and why."""

    image_id: str
    source_path: str
    stage: str
    error: str
    split: str | None = None  # known when the image is listed (e.g. listed but missing)


@dataclass(frozen=True)
class Listing:
    """A source, read.

    images: DataFrame[image_id: str, split: str, source_path: str] -- one row per listed image whose
        file exists, sorted by image_id.
    labels: DataFrame[image_id: str, split: str, <one bool column per attribute>] -- same rows and
        order as ``images``; plus ``identity`` (nullable Int64, the person in the image) where the
        source knows it (CelebA's identity_CelebA.txt).
    attributes: the attribute (or class) column names, in file order.
    problems: per-image problems (missing files, unlisted files); not in ``images``.
    files: annotation files read, for the manifest's input fingerprint.
    source: "celeba" | "folder".
    """

    images: pd.DataFrame
    labels: pd.DataFrame
    attributes: list[str]
    problems: list[ImageProblem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    source: str = ""


# The 40 CelebA attributes, in the order of the official list_attr_celeba.txt header.
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip

# Official split sizes (list_eval_partition.txt): 0 = train, 1 = val, 2 = test.
CELEBA_SPLIT_SIZES: dict[str, int] = {"train": 162_770, "val": 19_867, "test": 19_962}
CELEBA_IMAGE_SIZE: tuple[int, int] = (218, 178)  # (height, width)

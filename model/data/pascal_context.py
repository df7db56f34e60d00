"""Reader for PASCAL-Context in the multi-task layout of ASTMT, MTI-Net and ATRC (``PASCAL_MT``).

The layout (``ROOT`` is the unpacked ``PASCAL_MT`` folder, or a folder holding it)::

    ROOT/JPEGImages/{id}.jpg
    ROOT/ImageSets/Context/{train,val}.txt    one id per line (4998 train, 5105 val)
    ROOT/ImageSets/Parts/{train,val}.txt      JSON: id -> PASCAL VOC class of each annotated object
    ROOT/semseg/VOC12/{id}.png                21 class ids, 255 = ignore; used when present ...
    ROOT/semseg/pascal-context/{id}.png       ... else this one, same encoding
    ROOT/human_parts/{id}.mat                 PASCAL-Part 'anno' struct
    ROOT/normals_distill/{id}.png             RGB (n + 1) / 2 * 255, distilled from an NYUD model
    ROOT/sal_distill/{id}.png                 grey saliency 0..255, distilled
    ROOT/pascal-context/trainval/{id}.mat     'LabelMap': the full 459-class PASCAL-Context map

Labels are derived the way the reference loaders do it:

- semseg: the PNG as it is (ids 0..20, 255 becomes -1).
- human_parts: the parts of every object of VOC class 15 (person) grouped into 6 parts (head,
  torso, upper arm, lower arm, upper leg, lower leg), the rest background. An image whose
  ``ImageSets/Parts`` entry has no person is listed without the task; one whose persons carry no
  part masks loads without it (the reference marks such a label ignore everywhere).
- sal: grey / 255 > 0.5.
- normal: decoded from the PNG, valid only on pixels whose ``LabelMap`` class also exists in NYUD
  (the distillation source) or is "tvmonitor"; (0, 0, 0) elsewhere.
- edge: pixels where the 3x3 Laplacian of ``LabelMap`` is non-zero, thinned to one pixel width.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from skimage.morphology import thin

from hitts.model.data.errors import BadInput
from hitts.model.data.label_io import (
    check_label,
    decode_normal,
    open_image,
    read_image,
    read_label,
)
from hitts.model.data.source import SPLITS, Example, Reader, SourceItem
from hitts.model.tasks import (
    EDGE,
    EDGE_CLASSES,
    HUMAN_PARTS_CLASSES,
    NORMAL,
    PASCAL_CONTEXT_CLASSES,
    SALIENCY_CLASSES,
    SEGMENTATION,
    TaskSpec,
)

log = logging.getLogger(__name__)

LAYOUT = (
    "JPEGImages/{id}.jpg, ImageSets/Context/{train,val}.txt, "
    "semseg/{VOC12,pascal-context}/{id}.png, human_parts/{id}.mat, "
    "normals_distill/{id}.png, sal_distill/{id}.png, pascal-context/trainval/{id}.mat"
)
SEMSEG_DIRS = ("semseg/VOC12", "semseg/pascal-context")  # first match wins, as in the reference
PARTS_DIR = "human_parts"
NORMALS_DIR = "normals_distill"
SAL_DIR = "sal_distill"
CONTEXT_DIR = "pascal-context/trainval"

PERSON_CLASS = 15  # PASCAL VOC class index of "person" in the PASCAL-Part annotations
SALIENT_THRESHOLD = 0.5  # on grey / 255, as the reference loaders binarise the distilled maps

# Human part names of PASCAL-Part -> class id in HUMAN_PARTS_CLASSES (the 6-part grouping).
_PART_GROUPS = {
    1: ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"),
    2: ("neck", "torso"),
    3: ("luarm", "ruarm"),
    4: ("lhand", "llarm", "rhand", "rlarm"),
    5: ("luleg", "ruleg"),
    6: ("lfoot", "llleg", "rfoot", "rlleg"),
}
PART_IDS = {name: cls for cls, names in _PART_GROUPS.items() for name in names}

# PASCAL-Context (459-class) ids whose distilled normals count as ground truth: the classes whose
# name is also an NYUD class (the normals model was trained on NYUD), plus 427 "tvmonitor".
NORMAL_CLASS_IDS = np.array(
    (
        3,
        4,
        6,
        9,
        10,
        11,
        13,
        15,
        17,
        18,
        22,
        23,
        29,
        30,
        33,
        34,
        36,
        37,
        38,
        39,
        41,
        43,
        46,
        49,
        50,
        51,
        53,
        55,
        56,
        59,
        61,
        62,
        65,
        66,
        68,
        69,
        72,
        73,
        78,
        83,
        84,
        85,
        87,
        88,
        95,
        96,
        101,
        104,
        105,
        107,
        111,
        113,
        115,
        122,
        124,
        135,
        141,
        142,
        143,
        146,
        150,
        154,
        157,
        158,
        159,
        165,
        172,
        174,
        181,
        183,
        184,
        191,
        193,
        195,
        197,
        199,
        202,
        213,
        215,
        216,
        219,
        220,
        223,
        225,
        228,
        230,
        232,
        233,
        238,
        239,
        242,
        243,
        246,
        250,
        251,
        252,
        255,
        260,
        261,
        263,
        269,
        272,
        273,
        275,
        281,
        283,
        284,
        285,
        286,
        287,
        288,
        290,
        291,
        292,
        293,
        295,
        304,
        307,
        309,
        310,
        314,
        315,
        319,
        323,
        329,
        330,
        331,
        336,
        342,
        345,
        349,
        350,
        351,
        352,
        355,
        357,
        368,
        370,
        371,
        374,
        379,
        380,
        383,
        384,
        397,
        401,
        403,
        405,
        407,
        408,
        411,
        412,
        413,
        414,
        417,
        419,
        421,
        423,
        427,
        429,
        430,
        432,
        440,
        441,
        442,
        443,
        444,
        446,
        454,
        457,
    )
)


# ----------------------------------------------------------------------------------------------
# file access


def _names(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return set()


def _loadmat(path: Path) -> dict:
    if not path.is_file():
        raise BadInput(path, "file not found")
    try:
        return scipy.io.loadmat(path)
    except (MatReadError, ValueError, TypeError, OSError, EOFError, NotImplementedError) as e:
        raise BadInput(path, f"unreadable .mat file ({e})") from None


def _hw_mismatch(path: Path, what: str, shape: tuple[int, ...], hw: tuple[int, int]) -> BadInput:
    return BadInput(path, f"{what} is {shape[0]}x{shape[1]} but the image is {hw[0]}x{hw[1]}")


# ----------------------------------------------------------------------------------------------
# labels


def load_label_map(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) PASCAL-Context class ids from ``pascal-context/trainval/{id}.mat``."""
    mat = _loadmat(path)
    if "LabelMap" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise BadInput(path, f"no 'LabelMap' array; found {keys}")
    label_map = np.asarray(mat["LabelMap"])
    if label_map.ndim != 2 or label_map.dtype.kind not in "iuf":
        raise BadInput(
            path, f"'LabelMap' must be (H, W) class ids, got {label_map.dtype} {label_map.shape}"
        )
    if label_map.shape != tuple(hw):
        raise _hw_mismatch(path, "'LabelMap'", label_map.shape, hw)
    return label_map


def edges_from_label_map(label_map: np.ndarray) -> np.ndarray:
    """(H, W) int64 in {0, 1}: the boundaries of a class map, one pixel wide.

    Args:
        label_map: (H, W) class ids.
    """
    laplacian = cv2.Laplacian(label_map.astype(np.float64), cv2.CV_64F)  # 3x3, 4-neighbour kernel
    return thin(np.abs(laplacian) > 0).astype(np.int64)


def load_normals(path: Path, label_map: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 unit normals from ``normals_distill``; (0, 0, 0) off the NYUD classes.

    Args:
        path: RGB PNG ``(n + 1) / 2 * 255``.
        label_map: (H, W) PASCAL-Context class ids of the image.
        hw: The image's (H, W).
    """
    img = open_image(path)
    if img.mode != "RGB":
        raise BadInput(path, f"normal must be an RGB PNG (n+1)/2*255, got PIL mode {img.mode}")
    rgb = np.asarray(img)
    if rgb.shape[:2] != tuple(hw):
        raise _hw_mismatch(path, "normal label", rgb.shape, hw)
    return decode_normal(rgb, path, valid=np.isin(label_map, NORMAL_CLASS_IDS))


def load_saliency(path: Path) -> np.ndarray:
    """(H, W) int64 in {0, 1} from the grey ``sal_distill/{id}.png``."""
    img = open_image(path)
    if img.mode != "L":
        raise BadInput(path, f"saliency must be an 8-bit grey PNG, got PIL mode {img.mode}")
    grey = np.asarray(img).astype(np.float32) / 255.0
    return (grey > SALIENT_THRESHOLD).astype(np.int64)


def load_human_parts(path: Path, hw: tuple[int, int]) -> np.ndarray | None:
    """(H, W) int64 part ids (0 = background) from ``human_parts/{id}.mat``.

    Returns:
        None when no person in the file carries part masks (the label is then missing).
    """
    mat = _loadmat(path)
    # anno is a 1x1 struct (imname, objects); objects(k) = (class, class_ind, mask, parts);
    # parts(j) = (part_name, mask). Fields are read by position, as the reference loaders do.
    try:
        objects = np.asarray(mat["anno"][0, 0][1]).ravel()
    except (KeyError, IndexError, TypeError, ValueError):
        raise BadInput(
            path,
            "expected a PASCAL-Part 'anno' struct (imname, objects(class, class_ind, mask, parts))",
        ) from None
    target = np.zeros(hw, dtype=np.int64)
    for k, obj in enumerate(objects):
        try:
            class_ind = int(np.asarray(obj[1]).ravel()[0])
            parts = np.asarray(obj[3]).ravel()
        except (IndexError, TypeError, ValueError):
            raise BadInput(
                path, f"object {k}: expected fields (class, class_ind, mask, parts)"
            ) from None
        if class_ind != PERSON_CLASS:
            continue
        for part in parts:
            try:
                name = str(np.asarray(part[0]).ravel()[0])
                mask = np.asarray(part[1]).astype(bool)
            except (IndexError, TypeError, ValueError):
                raise BadInput(path, f"object {k}: expected parts (part_name, mask)") from None
            if name not in PART_IDS:
                raise BadInput(
                    path,
                    f"object {k}: unknown human part {name!r}; expected one of {sorted(PART_IDS)}",
                )
            if mask.shape != tuple(hw):
                raise _hw_mismatch(path, f"mask of part {name!r}", mask.shape, hw)
            target[mask] = PART_IDS[name]
    return target if target.any() else None


# ----------------------------------------------------------------------------------------------
# the reader


def _is_root(folder: Path) -> bool:
    return (folder / "JPEGImages").is_dir() and (folder / "ImageSets/Context/train.txt").is_file()


def _read_ids(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(path, f"unreadable id list ({e})") from None
    ids = [line.strip() for line in lines if line.strip()]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise BadInput(path, f"ids listed more than once: {twice}")
    return sorted(ids)


def _read_parts_list(path: Path) -> dict[str, list[int]] | None:
    """``ImageSets/Parts/{split}.txt``: id -> VOC classes of its objects; None if absent."""
    if not path.is_file():
        return None
    try:
        parts = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(path, f"unreadable parts list; expected JSON id -> classes ({e})") from None
    if not isinstance(parts, dict) or not all(isinstance(v, list) for v in parts.values()):
        raise BadInput(path, "expected a JSON object mapping each id to a list of VOC class ids")
    return parts


class PascalContextReader(Reader):
    """PASCAL-Context with the five tasks of the multi-task benchmarks.

    Args:
        root: The ``PASCAL_MT`` folder, or the folder holding it.
    """

    format_name = "pascal-context"
    tasks = (
        TaskSpec("semseg", SEGMENTATION, PASCAL_CONTEXT_CLASSES),
        TaskSpec("human_parts", SEGMENTATION, HUMAN_PARTS_CLASSES),
        TaskSpec("sal", SEGMENTATION, SALIENCY_CLASSES),
        TaskSpec("normal", NORMAL),
        TaskSpec("edge", EDGE, EDGE_CLASSES),
    )

    def __init__(self, root: str | Path):
        super().__init__(root)
        if not _is_root(self.root) and _is_root(self.root / "PASCAL_MT"):
            self.root = self.root / "PASCAL_MT"
        if not _is_root(self.root):
            found = sorted(os.listdir(self.root))[:20] if self.root.is_dir() else None
            raise BadInput(
                self.root,
                f"not a PASCAL_MT root: expected {LAYOUT}; "
                + ("the folder does not exist" if found is None else f"found {found}"),
            )

    def items(self) -> list[SourceItem]:
        """All ids of ``ImageSets/Context/{train,val}.txt``, keyed ``{split}/{id}``, sorted."""
        r = self.root
        dirs = (*SEMSEG_DIRS, PARTS_DIR, NORMALS_DIR, SAL_DIR, CONTEXT_DIR)
        present = {d: _names(r / d) for d in dirs}
        out: list[SourceItem] = []
        for split in SPLITS:
            ids_file = r / "ImageSets" / "Context" / f"{split}.txt"
            if not ids_file.is_file():
                log.info("%s: no %s, so no %s items", r, ids_file.name, split)
                continue
            people = _read_parts_list(r / "ImageSets" / "Parts" / f"{split}.txt")
            for id_ in _read_ids(ids_file):
                png, mat = f"{id_}.png", f"{id_}.mat"
                labels: dict[str, Path] = {}
                semseg_dir = next((d for d in SEMSEG_DIRS if png in present[d]), None)
                if semseg_dir is not None:
                    labels["semseg"] = r / semseg_dir / png
                has_person = people is None or id_ not in people or PERSON_CLASS in people[id_]
                if mat in present[PARTS_DIR] and has_person:
                    labels["human_parts"] = r / PARTS_DIR / mat
                if png in present[SAL_DIR]:
                    labels["sal"] = r / SAL_DIR / png
                if png in present[NORMALS_DIR]:
                    labels["normal"] = r / NORMALS_DIR / png
                if mat in present[CONTEXT_DIR]:
                    labels["edge"] = r / CONTEXT_DIR / mat
                out.append(
                    SourceItem(
                        key=f"{split}/{id_}",
                        split=split,
                        image=r / "JPEGImages" / f"{id_}.jpg",
                        labels=labels,
                        extra={"id": id_, "label_map": r / CONTEXT_DIR / mat},
                    )
                )
        return out

    def load(self, item: SourceItem) -> Example:
        """Read and check one image; a human_parts file without part masks gives no label."""
        image = read_image(item.image)
        hw = (image.shape[0], image.shape[1])
        label_map: np.ndarray | None = None

        def context_map() -> np.ndarray:
            nonlocal label_map
            if label_map is None:
                label_map = load_label_map(Path(item.extra["label_map"]), hw)
            return label_map

        labels: dict[str, np.ndarray] = {}
        for name, path in item.labels.items():
            task = self.task(name)
            if name == "semseg":
                label = read_label(task, path, hw)
            elif name == "human_parts":
                label = load_human_parts(path, hw)
                if label is None:
                    log.debug("%s: no person part masks; human_parts left missing", path)
                    continue
            elif name == "sal":
                label = load_saliency(path)
            elif name == "normal":
                label = load_normals(path, context_map(), hw)
            elif name == "edge":
                label = edges_from_label_map(context_map())
            else:
                raise KeyError(f"{self.format_name} has no task {name!r}")
            labels[name] = check_label(task, label, path, hw)
        return Example(
            key=item.key, split=item.split, image=image, labels=labels, image_path=item.image
        )

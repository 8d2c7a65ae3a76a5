"""Detection data: each layout read from files written as its documentation shows them, every annotation
rule, load_item's box scaling, and augmentation moving boxes with the pixels (no TensorFlow)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecnn.detect.augment import affine, augment, mosaic
from edgecnn.detect.data import DetItem, _yolo_label_path, discover_detection, load_item
from edgecnn.errors import EdgecnnError


def _png(path: Path, width: int = 40, height: int = 30, rects=()) -> Path:
    """A black image with white rectangles, each ``(x0, y0, x1, y1)`` in pixel edges (x1/y1 exclusive)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for x0, y0, x1, y1 in rects:
        pixels[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _extent(pixels: np.ndarray) -> list[int]:
    """The white area's pixel-edge box ``[x0, y0, x1, y1]`` (threshold at half intensity)."""
    ys, xs = np.nonzero(pixels[..., 0] > 127.5)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _yolo(box, width=40, height=30) -> str:
    x0, y0, x1, y1 = box
    return f"{(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} {(x1 - x0) / width} {(y1 - y0) / height}"


# ---------------------------------------------------------------------------------------------------------
# Ultralytics
# ---------------------------------------------------------------------------------------------------------
def _ultralytics(root: Path, names="[cat, dog]", train="images/train", labels=None) -> Path:
    """Six train images (one negative without a label file), two val images, a data.yaml."""
    labels = labels or {"t0": f"0 {_yolo((4, 6, 14, 16))}\n1 {_yolo((20, 5, 36, 25))}\n",
                        "t1": f"1 {_yolo((0, 0, 40, 30))}\n", "t2": "", "t3": f"0 {_yolo((10, 10, 20, 20))}\n",
                        "t4": f"1 {_yolo((1, 1, 9, 9))}\n", "v0": f"0 {_yolo((5, 5, 15, 15))}\n", "v1": None}
    for stem, text in labels.items():
        split = "val" if stem.startswith("v") else "train"
        _png(root / "images" / split / f"{stem}.png", rects=[(4, 6, 14, 16)] if stem == "t0" else [])
        if text is not None:
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    _png(root / "images" / "train" / "t5.png")          # no label file at all: a negative
    (root / "data.yaml").write_text(f"path: .\ntrain: {train}\nval: images/val\nnames: {names}\n")
    return root / "data.yaml"


def test_ultralytics_folder_and_yaml_read_the_same(tmp_path):
    yaml_file = _ultralytics(tmp_path)
    by_folder, by_file = discover_detection(tmp_path), discover_detection(yaml_file)
    assert by_folder.layout == "ultralytics" and by_folder.classes == ["cat", "dog"]
    assert by_folder.fingerprint() == by_file.fingerprint()
    items = {Path(i.image).stem: i for s in by_folder.splits.values() for i in s}
    assert len(items) == 8 and len(by_folder.splits["val"]) == 2
    assert len(by_folder.splits["test"]) == 1                     # no test: round(6 * 0.15) taken from train
    np.testing.assert_allclose(items["t0"].boxes, [[4, 6, 14, 16], [20, 5, 36, 25]], atol=1e-4)
    assert items["t0"].classes.tolist() == [0, 1] and (items["t0"].width, items["t0"].height) == (40, 30)
    for negative in ("t2", "t5", "v1"):                           # empty file, no file, no file
        assert items[negative].boxes.shape == (0, 4) and items[negative].classes.shape == (0,)
    counts = by_folder.counts()
    assert counts["val"]["images"] == 2 and counts["val"]["negatives"] == 1 and counts["val"]["boxes"] == 1
    assert sum(c[s]["per_class"]["dog"]["boxes"] for c in [counts] for s in c) == 3
    assert any("taken from train" in n for n in by_folder.notes)
    summary = json.loads(json.dumps(by_folder.to_json()))
    assert summary["layout"] == "ultralytics" and summary["fingerprint"] == by_folder.fingerprint()
    assert [p for p, _ in summary["test_files"]] == [i.image for i in by_folder.splits["test"]]


def test_ultralytics_names_as_dict_and_train_as_txt_list_or_folder_list(tmp_path):
    _ultralytics(tmp_path, names="{0: cat, 1: dog}")
    listed = sorted((tmp_path / "images" / "train").glob("*.png"))
    (tmp_path / "train.txt").write_text("".join(f"./images/train/{p.name}\n" for p in listed))
    (tmp_path / "data.yaml").write_text("path: .\ntrain: train.txt\nval: [images/val]\ntest: images/val\n"
                                        "names:\n  0: cat\n  1: dog\n")
    ds = discover_detection(tmp_path / "data.yaml", val_fraction=0.2)
    assert ds.classes == ["cat", "dog"]
    assert sum(len(s) for s in ds.splits.values()) == 10           # 6 listed + 2 val + 2 test (same folder)
    assert not any("taken from train" in n for n in ds.notes)


def test_ultralytics_label_path_replaces_the_last_images_component():
    assert _yolo_label_path(Path("/d/images/train/images/a.b.jpg")) == Path("/d/images/train/labels/a.b.txt")
    assert _yolo_label_path(Path("/d/pics/a.png")) == Path("/d/pics/a.txt")     # no images/: beside it


def test_ultralytics_polygon_line_is_read_as_its_bounding_box(tmp_path):
    _ultralytics(tmp_path, labels={"t0": "1 0.1 0.2 0.5 0.2 0.3 0.6\n", "v0": "", "t1": "", "t2": "", "t3": ""})
    item = next(i for i in discover_detection(tmp_path).splits["train"] + discover_detection(tmp_path).splits["test"]
                if Path(i.image).stem == "t0")
    np.testing.assert_allclose(item.boxes, [[4, 6, 20, 18]], atol=1e-4)


@pytest.mark.parametrize("line, message", [
    ("2 0.5 0.5 0.1 0.1", "unknown class id 2 at .*t0.txt:2. Allowed: 0..1"),
    ("0 0.5 0.5 0.1", "malformed YOLO label at .*t0.txt:2"),
    ("zero 0.5 0.5 0.1 0.1", "malformed YOLO label at .*t0.txt:2"),
    ("0 20 15 10 10", "t0.txt:2 should be normalised to 0-1.*divide x and w by the image width"),
])
def test_ultralytics_bad_lines_are_one_readable_error(tmp_path, line, message):
    _ultralytics(tmp_path, labels={"t0": f"0 {_yolo((4, 6, 14, 16))}\n{line}\n", "v0": "", "t1": "", "t2": ""})
    with pytest.raises(EdgecnnError, match=message):
        discover_detection(tmp_path)


def test_ultralytics_names_dict_with_a_gap_and_disagreeing_classes_are_errors(tmp_path):
    _ultralytics(tmp_path, names="{0: cat, 2: dog}")
    with pytest.raises(EdgecnnError, match=r"ids 0..1.*Received ids \[0, 2\]"):
        discover_detection(tmp_path)
    _ultralytics(tmp_path)
    with pytest.raises(EdgecnnError, match="disagree with the names"):
        discover_detection(tmp_path, classes=["dog", "cat"])


def test_box_rules_clip_skip_and_count(tmp_path):
    """Partly outside: clipped and noted; zero size, negative size, duplicate: skipped with the reason."""
    text = (f"0 {_yolo((30, 20, 50, 40))}\n"      # reaches past the right and bottom edges: clipped
            "0 0.5 0.5 0 0.2\n"                    # zero width
            f"1 {_yolo((2, 2, 8, 8))}\n1 {_yolo((2, 2, 8, 8))}\n")   # duplicate
    _ultralytics(tmp_path, labels={"t0": text, "v0": "", "t1": "", "t2": "", "t3": ""})
    ds = discover_detection(tmp_path, test_fraction=0.0)
    item = next(i for i in ds.splits["train"] + ds.splits["val"] if Path(i.image).stem == "t0")
    np.testing.assert_allclose(item.boxes, [[30, 20, 40, 30], [2, 2, 8, 8]], atol=1e-4)
    reasons = {where.rsplit(":", 1)[1]: why for where, why in ds.skipped}
    assert "zero-size or negative box" in reasons["2"] and "duplicate" in reasons["4"]
    assert any("1 box(es) reached outside their image and were clipped" in n for n in ds.notes)


# ---------------------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------------------
def _coco(root: Path, annotations=None, images_dir="images") -> Path:
    """A COCO file with category ids 3 and 7 (not contiguous) and images in images/ beside it."""
    for name in ("a", "b", "c"):
        _png(root / images_dir / f"{name}.png", rects=[(5, 4, 15, 12)] if name == "a" else [])
    images = [{"id": k + 10, "file_name": f"{n}.png", "width": 40, "height": 30} for k, n in enumerate("abcd")]
    annotations = annotations if annotations is not None else [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 4, 10, 8], "area": 80, "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0, 0, 20, 10], "area": 200, "iscrowd": 1},
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0},
        {"id": 4, "image_id": 11, "category_id": 3, "bbox": [50, 40, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 5, "image_id": 11, "category_id": 7, "bbox": [3, 3, 0, 5], "area": 0, "iscrowd": 0},
    ]
    data = {"info": {"description": "test"}, "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": 7, "name": "dent", "supercategory": "defect"},
                           {"id": 3, "name": "scratch", "supercategory": "defect"}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_non_contiguous_ids_crowd_missing_image_and_negatives(tmp_path):
    path = _coco(tmp_path)
    ds = discover_detection(path, val_fraction=0.34, test_fraction=0.34)
    assert ds.layout == "coco" and ds.classes == ["scratch", "dent"]          # ordered by category id
    assert ds.fingerprint() == discover_detection(tmp_path, val_fraction=0.34, test_fraction=0.34).fingerprint()
    items = {Path(i.image).stem: i for s in ds.splits.values() for i in s}
    assert sorted(items) == ["a", "b", "c"]                                   # d.png does not exist
    np.testing.assert_allclose(items["a"].boxes, [[5, 4, 15, 12]])
    assert items["a"].classes.tolist() == [1]
    np.testing.assert_allclose(items["b"].boxes, [[1, 1, 5, 5]])              # crowd left out, two skipped
    assert items["c"].boxes.shape == (0, 4)                                   # no annotation: a negative
    reasons = dict(ds.skipped)
    assert "wholly outside the 40x30 image" in reasons[f"{path}#annotation 4"]
    assert "zero-size" in reasons[f"{path}#annotation 5"]
    assert "image file not found" in reasons[f"{path}#image 13"]
    assert any("1 COCO crowd annotation(s)" in n for n in ds.notes)


def test_coco_images_beside_the_json_and_declared_size_of_a_resized_copy(tmp_path):
    path = _coco(tmp_path, annotations=[{"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 8, 20, 16]}],
                 images_dir=".")
    data = json.loads(path.read_text())
    data["images"][0].update(width=80, height=60)                           # the file is a half-size copy
    path.write_text(json.dumps(data))
    ds = discover_detection(tmp_path, val_fraction=0.34, test_fraction=0.34)
    item = next(i for s in ds.splits.values() for i in s if Path(i.image).stem == "a")
    np.testing.assert_allclose(item.boxes, [[5, 4, 15, 12]])
    assert any("resized copy" in n for n in ds.notes)


@pytest.mark.parametrize("annotation, message", [
    ({"id": 9, "image_id": 10, "category_id": 5, "bbox": [1, 1, 2, 2]}, r"unknown category_id 5 at .*#annotation 9"),
    ({"id": 9, "image_id": 99, "category_id": 3, "bbox": [1, 1, 2, 2]}, r"annotation 9 refers to image_id 99"),
    ({"id": 9, "image_id": 10, "category_id": 3, "bbox": [1, 1, 2]}, r"bbox at .*#annotation 9 should be"),
])
def test_coco_bad_annotations_are_one_readable_error(tmp_path, annotation, message):
    with pytest.raises(EdgecnnError, match=message):
        discover_detection(_coco(tmp_path, annotations=[annotation]))


def test_coco_classes_argument_orders_and_refuses_unknown_names(tmp_path):
    path = _coco(tmp_path)
    assert discover_detection(path, classes=["dent", "scratch", "hole"], val_fraction=0.34,
                              test_fraction=0.34).splits  # a class without boxes is allowed
    with pytest.raises(EdgecnnError, match=r"unknown class 'dent'.*Allowed classes: \['scratch'\]"):
        discover_detection(path, classes=["scratch"])


def test_coco_one_file_per_split_in_annotations_folder(tmp_path):
    for split in ("train", "val"):
        path = _coco(tmp_path / "src" / split)
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(path.read_text())
        for png in (tmp_path / "src" / split / "images").glob("*.png"):
            (tmp_path / "images").mkdir(exist_ok=True)
            png.rename(tmp_path / "images" / png.name)
    ds = discover_detection(tmp_path, test_fraction=0.34)
    assert ds.root == tmp_path.absolute()
    assert len(ds.splits["val"]) == 3 and len(ds.splits["train"]) + len(ds.splits["test"]) == 3


# ---------------------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------------------
def _voc(root: Path, objects: dict[str, list[tuple]], image_sets: dict[str, list[str]] | None = None) -> Path:
    """Annotations/<id>.xml as VOC writes them (1-based inclusive pixels) + JPEGImages/<id>.png."""
    for image_id, objs in objects.items():
        _png(root / "JPEGImages" / f"{image_id}.png", rects=[o[1] for o in objs if not o[2]])
        xml = "".join(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for name, (x0, y0, x1, y1), difficult in objs)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.png</filename><size><width>40</width>"
            f"<height>30</height><depth>3</depth></size><segmented>0</segmented>{xml}</annotation>")
    for split, ids in (image_sets or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_voc_with_image_sets_converts_one_based_pixels_and_leaves_difficult_out(tmp_path):
    objs = {"000001": [("bird", (4, 6, 14, 16), False), ("cat", (20, 2, 30, 12), True)],
            "000002": [("cat", (0, 0, 40, 30), False)], "000003": [], "000004": [("bird", (1, 1, 5, 5), False)]}
    root = _voc(tmp_path, objs, {"train": ["000001", "000003"], "val": ["000002"], "test": ["000005"]})
    _png(root / "JPEGImages" / "000005.png")                                 # listed, no XML: a negative
    ds = discover_detection(root)
    assert ds.layout == "voc" and ds.classes == ["bird", "cat"]
    first = ds.splits["train"][0]
    np.testing.assert_allclose(first.boxes, [[4, 6, 14, 16]])                 # xmin=5..xmax=14 -> [4, 14)
    pixels, boxes, _ = load_item(first, 80)
    assert _extent(pixels) == boxes[0].round().astype(int).tolist()
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert ds.splits["test"][0].boxes.shape == (0, 4)
    assert any("difficult" in n for n in ds.notes) and any("1 VOC image(s) are in no" in n for n in ds.notes)


def test_voc_without_image_sets_is_split_by_a_seeded_shuffle(tmp_path):
    root = _voc(tmp_path, {f"{k:06d}": [("bird", (2, 2, 10, 10), False)] for k in range(10)})
    ds = discover_detection(root, seed=3)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    again = discover_detection(root, seed=3)
    assert [i.image for i in again.splits["val"]] == [i.image for i in ds.splits["val"]]


def test_voc_unknown_name_and_missing_bndbox_are_errors(tmp_path):
    root = _voc(tmp_path, {"000001": [("bird", (2, 2, 10, 10), False)], "000002": [("brid", (2, 2, 9, 9), False)]})
    with pytest.raises(EdgecnnError, match=r"unknown class 'brid' in .*000002.xml:object 1.*Did you mean 'bird'"):
        discover_detection(root, classes=["bird", "cat"])
    (root / "Annotations" / "000002.xml").write_text("<annotation><object><name>bird</name></object></annotation>")
    with pytest.raises(EdgecnnError, match=r"<xmin> at .*000002.xml:object 1 should be a number"):
        discover_detection(root)


# ---------------------------------------------------------------------------------------------------------
# The bundled defect set
# ---------------------------------------------------------------------------------------------------------
def test_bundled_defect_set_boxes_cover_their_masks_and_good_images_are_negatives(tmp_path):
    from edgecnn.data.defects import make_defects

    make_defects(tmp_path / "defects", seed=0, per_class=10, size=32)
    ds = discover_detection(tmp_path / "defects")
    assert ds.layout == "bundled" and ds.classes == ["scratch", "crack", "spot"]
    assert discover_detection(tmp_path / "defects" / "meta.json").fingerprint() == ds.fingerprint()
    counts = ds.counts()
    assert [counts[s]["images"] for s in ("train", "val", "test")] == [24, 8, 8]
    assert counts["test"]["negatives"] == 2 and counts["test"]["boxes"] == 6
    for item in ds.splits["train"]:
        rel = Path(item.image).relative_to(ds.root)
        if rel.parts[1] == "good":
            assert item.boxes.shape == (0, 4)
            continue
        mask = np.asarray(Image.open(ds.root / "masks" / rel)) > 0
        x0, y0, x1, y1 = item.boxes[0].astype(int)
        assert mask[y0:y1, x0:x1].sum() == mask.sum() > 0                       # every defect pixel inside
        assert ds.classes[item.classes[0]] == rel.parts[1]


# ---------------------------------------------------------------------------------------------------------
# Discovery errors and load_item
# ---------------------------------------------------------------------------------------------------------
def test_folder_without_annotations_and_bad_arguments_are_errors(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    with pytest.raises(EdgecnnError, match="no detection dataset found.*class-per-folder tree has no boxes"):
        discover_detection(tmp_path)
    with pytest.raises(EdgecnnError, match="detection dataset not found"):
        discover_detection(tmp_path / "missing")
    with pytest.raises(EdgecnnError, match="val_fraction \\+ test_fraction should be below 1"):
        discover_detection(tmp_path, val_fraction=0.5, test_fraction=0.5)


def test_load_item_scales_boxes_onto_the_resized_image(tmp_path):
    image = _png(tmp_path / "x.png", width=50, height=20, rects=[(10, 4, 30, 12)])
    item = DetItem(str(image), np.array([[10, 4, 30, 12]]), np.array([0]), 50, 20)
    pixels, boxes, classes = load_item(item, 100)
    assert pixels.shape == (100, 100, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(boxes, [[20, 20, 60, 60]])
    assert np.abs(np.array(_extent(pixels)) - boxes[0]).max() <= 1
    assert load_item(item, 64, channels=1)[0].shape == (64, 64, 1) and classes.tolist() == [0]


# ---------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_augment_moves_the_box_with_the_pixels(seed):
    image = np.zeros((64, 80, 3), np.uint8)
    image[20:44, 25:50] = 255
    out, boxes, classes, dropped = augment(image, np.array([[25, 20, 50, 44]]), np.array([3]),
                                           np.random.default_rng(seed), hflip=True, vflip=True)
    assert out.shape == image.shape and out.dtype == np.uint8 and dropped == 0 and classes.tolist() == [3]
    assert np.abs(np.array(_extent(out)) - boxes[0]).max() <= 1


def test_affine_drops_and_counts_boxes_that_leave_the_image():
    image = np.zeros((40, 40), np.float32)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 25, 15, 35]])
    # shifted 7 px left: the first box keeps 3 of 10 columns (30 %), the others stay whole or 80 %
    out, kept, classes, dropped = affine(image, boxes, np.array([0, 1, 2]), shift=(-7, 0), min_visible=0.5)
    assert dropped == 1 and classes.tolist() == [1, 2] and out.shape == (40, 40)
    np.testing.assert_allclose(kept, [[13, 20, 23, 30], [0, 25, 8, 35]])
    assert affine(image, boxes, np.array([0, 1, 2]), shift=(-7, 0), min_visible=0.2)[3] == 0
    assert affine(image, boxes, np.array([0, 1, 2]), shift=(-45, 0), min_visible=0.0)[3] == 3   # wholly outside


def test_augment_never_loses_a_box_uncounted():
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 6, 6], [30, 30, 40, 40], [15, 15, 25, 25]], np.float32)
    for _ in range(50):
        _, kept, classes, dropped = augment(np.zeros((40, 40, 1), np.float32), boxes, np.arange(3), rng,
                                            scale=(0.5, 1.5), translate=0.3)
        assert len(kept) + dropped == 3 and len(classes) == len(kept)
        assert np.all(kept >= 0) and np.all(kept[:, 2:] <= 40) and np.all(kept[:, 2:] > kept[:, :2])


def test_augment_bad_arguments_are_readable_errors():
    with pytest.raises(EdgecnnError, match="scale should be a pair"):
        augment(np.zeros((8, 8)), np.zeros((0, 4)), np.zeros(0), np.random.default_rng(0), scale=(2, 1))
    with pytest.raises(EdgecnnError, match="same K"):
        affine(np.zeros((8, 8)), np.zeros((2, 4)), np.zeros(1))


def test_mosaic_tiles_four_images_and_moves_their_boxes():
    samples = []
    for k, (w, h) in enumerate([(40, 40), (60, 30), (20, 50), (32, 32)]):
        image = np.zeros((h, w, 3), np.uint8)
        box = [w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2]
        image[box[1]:box[3], box[0]:box[2]] = 255
        samples.append((image, np.array([box]), np.array([k])))
    out, boxes, classes = mosaic(samples, 65, np.random.default_rng(1))
    assert out.shape == (65, 65, 3) and sorted(classes.tolist()) == [0, 1, 2, 3]
    quadrants = {(int(b[0] >= 32), int(b[1] >= 32)) for b in boxes}
    assert len(quadrants) == 4
    for box in boxes:
        x0, y0, x1, y1 = box
        region = out[int(y0) - 2:int(np.ceil(y1)) + 2, int(x0) - 2:int(np.ceil(x1)) + 2]
        offset = np.array([int(x0) - 2, int(y0) - 2] * 2)
        assert np.abs(np.array(_extent(region)) + offset - box).max() <= 1


def test_docs_layout_table_lists_exactly_the_layouts():
    from edgecnn.detect.data import LAYOUTS

    text = (Path(__file__).resolve().parents[1] / "docs" / "detection.md").read_text()
    section = text[text.index("## Data"):]
    rows = [line.split("|")[1].strip().strip("`") for line in section.split("\n### ")[0].splitlines()
            if line.startswith("|") and not set(line) <= set("|- ")][1:]
    assert sorted(rows) == sorted(LAYOUTS)


def test_coco_roboflow_split_folders_with_images_beside_each_file(tmp_path):
    for split in ("train", "valid"):
        _coco(tmp_path / split, images_dir=".").rename(tmp_path / split / "_annotations.coco.json")
    ds = discover_detection(tmp_path, test_fraction=0.34)
    assert ds.layout == "coco" and ds.root == tmp_path.absolute()
    assert len(ds.splits["val"]) == 3 and all("/valid/" in i.image for i in ds.splits["val"])


def test_bundled_meta_written_by_hand_null_bbox_is_skipped_and_unknown_class_is_an_error(tmp_path):
    records = [{"path": f"{split}/{cls}/{k}.png", "class": cls, "split": split, "bbox": bbox}
               for k, (split, cls, bbox) in enumerate([
                   ("train", "good", None), ("train", "scratch", [2, 3, 9, 7]), ("train", "scratch", None),
                   ("train", "good", None), ("val", "scratch", [0, 0, 40, 30]), ("test", "good", None)])]
    for r in records:
        _png(tmp_path / r["path"])
    meta = {"classes": ["good", "scratch"], "images": records}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    ds = discover_detection(tmp_path)
    assert ds.layout == "bundled" and ds.classes == ["scratch"]
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    np.testing.assert_allclose(ds.splits["train"][1].boxes, [[2, 3, 9, 7]])
    assert "without its bbox" in dict(ds.skipped)[f"{tmp_path / 'meta.json'}#images[2]"]
    records[4]["class"] = "dent"
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(EdgecnnError, match=r"unknown class 'dent' in .*meta.json#images\[4\]"):
        discover_detection(tmp_path)


def test_image_size_is_upright_as_load_image_decodes_it(tmp_path):
    from edgecnn.detect.data import _image_size, _Log

    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6                                   # "rotate 90 CW to view": the upright image is 20 x 40
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert _image_size(tmp_path / "phone.jpg", _Log()) == (20, 40)
    log = _Log()
    assert _image_size(tmp_path / "none.jpg", log) is None and "not found" in log.skipped[0][1]

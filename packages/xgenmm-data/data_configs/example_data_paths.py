"""Image path map in the original repository's Python form (`--path-map example_data_paths.py`).

The first key (in insertion order) that is a substring of an image path wins and is replaced by its value.
"""

IMAGE_FOLDER_DICT = {
    "coco/som_train2017": "/data/images/coco/som_train2017",
    "share_textvqa": "/data/images/share_textvqa",
    "textvqa": "/data/images/textvqa",
    "docvqa": "/data/images/docvqa",
    "vg/": "/data/images/vg/",
    "ocr_vqa": "/data/images/ocr_vqa",
    "gqa": "/data/images/gqa",
    "coco/train2017": "/data/images/coco/train2017",
    "train2017": "/data/images/coco/train2017",
}

"""Image path mapping (LAVIS `open_flamingo/train/sft_data_utils.py`, its image folder dict): a `PathMap` of
path substrings to replacements, read from a dict, a YAML file or a Python file defining `IMAGE_FOLDER_DICT`
(parsed with `ast`, never executed), and `resolve_image_path`.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from omegaconf import OmegaConf

from .datafiles import DataError, decode_utf8


class PathMap:
    """Ordered substring mapping of image paths, as the original's image folder dict: the first key (in order)
    that is a substring of the path wins and every occurrence of it is replaced by its value."""

    def __init__(self, mapping: dict[str, str] | None = None):
        self.mapping = dict(mapping or {})

    def __call__(self, path: str) -> str | None:
        """The mapped path, or None when no key matches."""
        for key, value in self.mapping.items():
            if key in path:
                return path.replace(key, value)
        return None

    def __len__(self):
        return len(self.mapping)

    @classmethod
    def load(cls, source) -> PathMap:
        """From a dict, a YAML file (a mapping, or one under the key `image_folders`/`path_map`), or a Python
        file defining `IMAGE_FOLDER_DICT` (the reference's `data_configs/example_data_paths.py`; its
        `IMAGE_FOLDER_DICT_GCP` is accepted too). The Python file is parsed, never executed: see
        `_python_path_map`."""
        if source is None:
            return cls()
        if isinstance(source, PathMap):
            return source
        if isinstance(source, dict):
            return cls(source)
        path = Path(source)
        if not path.exists():
            raise DataError([f"{path}: path map file not found"])
        if path.suffix == ".py":
            return cls(_python_path_map(path))
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        for key in ("image_folders", "path_map"):
            if isinstance(data, dict) and isinstance(data.get(key), dict):
                data = data[key]
        if not isinstance(data, dict):
            raise DataError([f"{path}: expected a mapping of path substrings to replacements"])
        return cls({str(k): str(v) for k, v in data.items()})


PATH_MAP_NAMES = ("IMAGE_FOLDER_DICT", "IMAGE_FOLDER_DICT_GCP")


def _python_path_map(path: Path) -> dict[str, str]:
    """`IMAGE_FOLDER_DICT` (else `IMAGE_FOLDER_DICT_GCP`) of a Python file, read without running it: the file
    is parsed with `ast` and the name must be assigned a literal dict of string keys and values
    (`{"coco/": "/data/coco/", ...}`); anything else (a call, a variable, an f-string, `**other`) is a
    `DataError`. The last top-level assignment of the name wins, as it would when the file runs."""
    try:
        tree = ast.parse(decode_utf8(path.read_bytes(), path), filename=str(path))
    except SyntaxError as e:
        raise DataError([f"{path}:{e.lineno}: path map is not valid Python: {e.msg}"]) from None
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Name) and t.id in PATH_MAP_NAMES:
                found[t.id] = node.value
    for name in PATH_MAP_NAMES:
        if name not in found:
            continue
        value = found[name]
        try:
            mapping = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, RecursionError):  # not a literal (a call, a name, ...)
            mapping = None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise DataError(
                [
                    f"{path}:{value.lineno}: {name} must be a literal dict of strings "
                    '({"path/part": "/replacement", ...}); the file is parsed, not executed'
                ]
            )
        return mapping
    raise DataError([f"{path}: defines no {PATH_MAP_NAMES[0]} (a literal dict of strings)"])


def resolve_image_path(path: str, path_map: PathMap, image_root: str | None) -> tuple[str | None, str | None]:
    """(resolved path, None) or (None, reason). Path map first; then a still-relative path is joined to
    `image_root`; a relative path that nothing maps is an error (the reference calls exit(0) here)."""
    mapped = path_map(path)
    out = mapped if mapped is not None else path
    if not os.path.isabs(out):
        if image_root is not None:
            out = os.path.join(image_root, out)
        elif mapped is None:
            return None, f"unmapped relative image path {path!r} (no path-map key matches and no image_root)"
    return out, None


__all__ = ["PATH_MAP_NAMES", "PathMap", "resolve_image_path"]

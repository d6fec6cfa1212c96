"""Atomic checkpoint publishing: temp dir -> rename to <version>/ -> swap the latest symlink."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

from schemas.checkpoint import MANIFEST_FILE, ONNX_FILES, WEIGHT_DIGESTS, WEIGHTS_FILE, file_digest, read_manifest

from .errors import TrainerError

LATEST = "latest"


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_writable(output_dir: str | Path) -> None:
    """Fail before hours of training, not after, when the output dir can't take a checkpoint."""
    root = Path(output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise TrainerError(f"output dir {root} is not writable: {exc.strerror}") from None


def _weight_digests(directory: Path, version: str, manifest: dict) -> dict:
    """The manifest's WEIGHT_DIGESTS entry for checkpoint `version`, written in `directory`.

    ONNX graphs carry their digests in the manifest's `onnx` listing (export_onnx); one
    written without an entry there is refused, so every weight file published has a digest.
    """
    if not (directory / WEIGHTS_FILE).is_file():
        raise TrainerError(f"checkpoint {version} can't be published: it has no {WEIGHTS_FILE}")
    listed = {entry["file"] for entry in manifest.get("onnx", {}).get("files", {}).values()}
    unlisted = [name for name in ONNX_FILES.values() if (directory / name).exists() and name not in listed]
    if unlisted:
        raise TrainerError(f"checkpoint {version} can't be published: {', '.join(unlisted)} not in the manifest's onnx listing, so without a sha256")
    return {WEIGHTS_FILE: file_digest(directory / WEIGHTS_FILE)}


def publish(output_dir: str | Path, version: str, write: Callable[[Path], None], manifest: dict, *,
            make_latest: bool = True) -> Path:
    """Write a checkpoint with `write(tmp_dir)`, add the manifest with the weights' digests,
    publish it atomically.

    A reader following `latest` sees the previous checkpoint or the new one, never a
    half-written directory; a failure anywhere leaves `latest` where it was.
    `make_latest=False` keeps a refused candidate on disk without serving it.
    """
    root = Path(output_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=root))
    except OSError as exc:
        raise TrainerError(f"output dir {root} is not writable: {exc.strerror}") from None
    final = root / version
    try:
        if final.exists():
            raise TrainerError(f"checkpoint {final} already exists")
        write(tmp)
        manifest = {**manifest, WEIGHT_DIGESTS: _weight_digests(tmp, version, manifest)}
        (tmp / MANIFEST_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        _fsync_tree(tmp)
        tmp.chmod(0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_latest:
        point_latest(root, version)
    return final


def point_latest(root: Path, version: str) -> None:
    """Swap `root/latest` to `version` atomically: a reader sees the old target or the new one."""
    link_tmp = root / f".{LATEST}-{version}"
    link_tmp.unlink(missing_ok=True)
    os.symlink(version, link_tmp)  # relative, so the directory can be moved as a whole
    os.replace(link_tmp, root / LATEST)


def _refused(directory: Path) -> bool:
    return read_manifest(directory).get("comparison", {}).get("passed") is False


def rollback(output_dir: str | Path, version: str = "") -> tuple[str, str]:
    """Point `latest` at `version`, or at the newest version before the current one that the
    comparison did not refuse; (from, to).

    Running consumers follow within their --reload-interval-s, as they follow a new version.
    """
    root = Path(output_dir)
    link = root / LATEST
    if not link.is_symlink():
        raise TrainerError(f"{link} is not a symlink; nothing was published in {root}")
    current = os.readlink(link)
    published = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / MANIFEST_FILE).is_file()
                       and not p.name.startswith("."))
    if version:
        if version not in published:
            raise TrainerError(f"version {version!r} is not a checkpoint in {root} (published: {', '.join(published[-5:]) or 'none'})")
        target = version
    else:
        older = [name for name in published if name < current and not _refused(root / name)]
        if not older:
            raise TrainerError(f"no version older than {current} in {root} to roll back to")
        target = older[-1]
    read_manifest(root / target)  # a directory that is not a usable checkpoint is never made latest
    point_latest(root, target)
    return current, target

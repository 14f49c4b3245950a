"""Where a sweep keeps its files: a local folder, or any URI `pyarrow.fs` resolves (s3://, gs://, hdfs://).

Ray Train and Tune write checkpoints and the Tune experiment there themselves (`storage_path`);
lossweep's own files (the sweep state, mined negatives) go through these few functions, so a sweep
started on one machine resumes, reproduces and exports from any other that reaches the same URI.
Credentials and endpoints come from the environment, as for Ray (e.g. AWS_* and AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(location: str) -> bool:
    return "://" in location


def absolute(location: str) -> str:
    """A URI unchanged (without a trailing slash); a local path made absolute from this process's folder."""
    if is_uri(location):
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())


def join(location: str, *parts: str) -> str:
    return posixpath.join(location, *parts) if is_uri(location) else str(Path(location, *parts))


def basename(location: str) -> str:
    """The last part of a path or URI (`s3://b/runs/negatives/ab12` -> `ab12`)."""
    return posixpath.basename(location.rstrip("/"))


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a location and the path inside it."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).expanduser())


def as_uri(location: str, path_in_filesystem: str) -> str:
    """A path inside `location`'s filesystem (as Ray's `Checkpoint.path` gives it) as a full location."""
    if not is_uri(location):
        return path_in_filesystem
    scheme = location.split("://", 1)[0]
    return f"{scheme}://{path_in_filesystem.lstrip('/')}" if "://" not in path_in_filesystem else path_in_filesystem


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(location: str) -> str | None:
    """The file's text, or None if there is no file."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def write_text(location: str, text: str) -> None:
    """Write a whole file (atomically on local disks: readers never see half of it)."""
    fs, path = filesystem(location)
    fs.create_dir(posixpath.dirname(path) if is_uri(location) else str(Path(path).parent), recursive=True)
    if not is_uri(location):
        temporary = f"{path}.tmp-{os.getpid()}"
        Path(temporary).write_text(text, encoding="utf-8")
        os.replace(temporary, path)
        return
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode("utf-8"))


def upload(local_dir: Path, location: str) -> None:
    """Copy a local folder's files to a location (a no-op if they are the same folder)."""
    if not is_uri(location) and Path(location).resolve() == Path(local_dir).resolve():
        return
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(local_dir), path, destination_filesystem=fs, source_filesystem=pafs.LocalFileSystem())


def remove(location: str) -> None:
    """Delete a folder and what it holds (nothing if it is not there)."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def local_copy(location: str, cache: Path | None = None) -> Path:
    """A local folder holding the files of `location`: the folder itself if it is local, else a copy
    (made once per location under `cache`, default the temporary folder)."""
    if not is_uri(location):
        return Path(location).expanduser()
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{location}: no such folder in the storage")
    base = cache or Path(tempfile.gettempdir()) / "lossweep-storage"
    target = base / location.split("://", 1)[1]
    marker = target / ".complete"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(path, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        marker.touch()
    return target


def writable_problem(location: str) -> str | None:
    """Why nothing can be written under `location`, or None (one small probe file, removed again)."""
    probe = join(location, f".lossweep-probe-{os.getpid()}")
    try:
        write_text(probe, "ok")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except Exception as error:  # a missing bucket, no credentials, a read-only disk: the reason is in the text
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None

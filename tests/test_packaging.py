"""One faiss build per environment: faiss-cpu or the GPU build (with a torch on the same CUDA), never both."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FAISS_BUILDS = ("faiss-cpu", "faiss-gpu-cu12")


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def names(requirements: list[str]) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements]


def test_faiss_comes_from_exactly_one_extra(project: dict) -> None:
    extras = project["optional-dependencies"]
    assert not any(n.startswith("faiss") for n in names(project["dependencies"]))
    assert [n for n in names(extras["cpu"]) if n.startswith("faiss")] == ["faiss-cpu"]
    assert [n for n in names(extras["gpu"]) if n.startswith("faiss")] == ["faiss-gpu-cu12"]


def test_the_gpu_extra_keeps_torch_on_the_cuda_12_line_of_faiss(project: dict) -> None:
    """PyPI's torch 2.10 is its last CUDA 12 build; 2.11 on are CUDA 13, beside faiss's CUDA 12 libraries."""
    gpu = {name: r for name, r in zip(names(project["optional-dependencies"]["gpu"]),
                                       project["optional-dependencies"]["gpu"])}
    assert "<2.11" in gpu["torch"] and "<0.26" in gpu["torchvision"]


def test_this_environment_holds_one_faiss_build() -> None:
    installed = []
    for name in FAISS_BUILDS:
        try:
            metadata.version(name)
            installed.append(name)
        except metadata.PackageNotFoundError:
            pass
    assert len(installed) == 1, f"faiss builds installed here: {installed or 'none'}; `make install` picks one"

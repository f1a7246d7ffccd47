"""pyproject.toml and bentofile.yaml describe the same project: the same dependencies, every package."""

from __future__ import annotations

import tomllib

import yaml

from tests.conftest import ROOT


def test_the_bento_and_the_package_pin_the_same_dependencies() -> None:
    """The Bento also ships the openvino extra, so that a CPU host runs the engine ENGINE=auto picks."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    served = project["dependencies"] + project["optional-dependencies"]["openvino"]
    assert sorted(bento["python"]["packages"]) == sorted(served)


def test_every_first_party_package_is_installed_and_the_served_ones_are_in_the_bento() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".") for p in ROOT.glob("*/**/__init__.py")
               if not p.is_relative_to(ROOT / "tests") and ".venv" not in p.parts and not p.parent.name.startswith(".")}
    on_disk -= {"scripts", "bench"}  # command-line tools run from the checkout, not installed packages
    assert on_disk <= set(setuptools["packages"]), f"not installed by pip: {sorted(on_disk - set(setuptools['packages']))}"
    include = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    for package in set(setuptools["packages"]) - {"bulk", "vision_client"}:  # an offline tool and the callers' client
        assert f"{package.replace('.', '/')}/*.py" in include, f"bentofile.yaml does not include {package}"
    for module in setuptools["py-modules"]:
        assert f"{module}.py" in include

"""Discover sub-packages of the mapped folders (an explicit list silently drops them)."""

from setuptools import find_packages, setup


def _mapped(folder: str, name: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=find_packages(include=["processtwin", "processtwin.*"])
    + _mapped("models", "processtwin.models")
    + _mapped("solvers", "processtwin.solvers"),
)

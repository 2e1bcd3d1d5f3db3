"""Check built distributions before they are tested or published (used by scripts/test_wheels.sh).

For each package folder given, the wheel and sdist in DIST/<package>/ must:

- carry release metadata: ``License-Expression: Apache-2.0`` with the LICENSE file inside the wheel
  and the sdist, and no ``License ::`` classifier (PEP 639: PyPI refuses both together); the
  project URLs (Homepage, Documentation, Source, Changelog, Issues); ``Requires-Python``; the Python
  3.10-3.12, Development Status, Topic and ``Typing :: Typed`` classifiers; keywords; ``py.typed``;
- agree on the version, and the package's CHANGELOG.md must have a section for it: the first
  ``## `` heading names the version (``## Unreleased — 0.1.0`` before a release, ``## 0.1.0 —
  2027-01-31`` in a release); with ``--tag`` the tag must name one of the packages and its version,
  and that package's heading must be dated, not "Unreleased";
- hold no junk: no caches, bytecode, ONNX/weight files, nothing over 512 KiB and at most 2 MiB in
  all (tests may be in the sdist, data may not).

Usage: python scripts/check_dists.py DIST PACKAGE_DIR... [--tag obert-core-v0.1.0]
"""

from __future__ import annotations

import argparse
import email.parser
import re
import sys
import tarfile
import zipfile
from pathlib import Path

URL_LABELS = ("Homepage", "Documentation", "Source", "Changelog", "Issues")
CLASSIFIERS = (
    "Development Status :: 4 - Beta",
    "Programming Language :: Python :: 3.10",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Typing :: Typed",
)
JUNK = re.compile(
    r"(__pycache__|\.pyc$|\.mypy_cache|\.ruff_cache|\.pytest_cache|\.hypothesis|\.benchmarks"
    r"|\.nox/|\.venv|/runs/|/outputs/|\.onnx$|\.safetensors$|\.bin$|\.pt$|\.npz?$|\.egg-info)"
)
MAX_MEMBER = 512 * 1024
MAX_TOTAL = 2 * 1024 * 1024


def _fail(problems: list[str], where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def _check_members(problems: list[str], where: str, members: dict[str, int]) -> None:
    for name, size in members.items():
        if JUNK.search(name):
            _fail(problems, where, f"junk file {name}")
        if size > MAX_MEMBER:
            _fail(problems, where, f"{name}: {size} bytes (limit {MAX_MEMBER}); no data files")
    total = sum(members.values())
    if total > MAX_TOTAL:
        _fail(problems, where, f"{total} bytes uncompressed in all (limit {MAX_TOTAL})")


def _check_metadata(problems: list[str], where: str, text: str) -> str:
    meta = email.parser.Parser().parsestr(text)
    if meta.get("License-Expression") != "Apache-2.0":
        _fail(problems, where, f"License-Expression is {meta.get('License-Expression')!r}")
    if "LICENSE" not in (meta.get_all("License-File") or []):
        _fail(problems, where, "no License-File: LICENSE")
    classifiers = meta.get_all("Classifier") or []
    for classifier in CLASSIFIERS:
        if classifier not in classifiers:
            _fail(problems, where, f"classifier {classifier!r} missing")
    if any(c.startswith("License ::") for c in classifiers):
        _fail(problems, where, "a License :: classifier next to License-Expression (PEP 639)")
    labels = {url.split(",")[0].strip() for url in meta.get_all("Project-URL") or []}
    for label in URL_LABELS:
        if label not in labels:
            _fail(problems, where, f"project URL {label!r} missing")
    for field in ("Requires-Python", "Keywords", "Summary", "Description-Content-Type"):
        if not meta.get(field):
            _fail(problems, where, f"{field} missing")
    return str(meta.get("Version"))


def _check_package(dist: Path, package_dir: Path, tag: str | None) -> list[str]:
    problems: list[str] = []
    name = package_dir.name
    module = name.replace("-", "_")
    wheels = sorted((dist / name).glob("*.whl"))
    sdists = sorted((dist / name).glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"{dist / name}: expected one wheel and one sdist, found {wheels + sdists}"]
    wheel, sdist = wheels[0], sdists[0]

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        _check_members(problems, wheel.name, {i.filename: i.file_size for i in zf.infolist()})
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        wheel_version = _check_metadata(problems, wheel.name, zf.read(info).decode())
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
            _fail(problems, wheel.name, "LICENSE not in .dist-info/licenses/")
        if f"{module}/py.typed" not in names:
            _fail(problems, wheel.name, f"{module}/py.typed missing")

    with tarfile.open(sdist) as tf:
        members = {m.name: m.size for m in tf.getmembers() if m.isfile()}
        _check_members(problems, sdist.name, members)
        top = f"{module}-{wheel_version}"
        for required in ("PKG-INFO", "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"):
            if f"{top}/{required}" not in members:
                _fail(problems, sdist.name, f"{required} missing")
        pkg_info = tf.extractfile(f"{top}/PKG-INFO")
        if pkg_info is not None:
            sdist_version = _check_metadata(problems, sdist.name, pkg_info.read().decode())
            if sdist_version != wheel_version:
                _fail(problems, sdist.name, f"version {sdist_version} != wheel {wheel_version}")

    changelog_file = package_dir / "CHANGELOG.md"
    if not changelog_file.is_file():
        _fail(problems, str(changelog_file), "missing")
        return problems
    changelog = changelog_file.read_text(encoding="utf-8")
    heading = next((line for line in changelog.splitlines() if line.startswith("## ")), "")
    if not re.search(rf"(?<![\d.]){re.escape(wheel_version)}(?![\d.])", heading):
        _fail(problems, str(changelog_file), f"first section {heading!r} lacks {wheel_version}")
    if tag is not None and tag.startswith(f"{name}-v"):
        if tag != f"{name}-v{wheel_version}":
            _fail(problems, tag, f"tag does not match the built {name} {wheel_version}")
        if "unreleased" in heading.lower() or not re.search(r"\d{4}-\d{2}-\d{2}", heading):
            _fail(problems, str(changelog_file), f"release heading {heading!r} must be dated")
    if not problems:
        print(f"check_dists: {wheel.name} and {sdist.name} ok")
    return problems


def main() -> int:
    """Check the dists of every package given; print each problem, exit 1 if there is one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path)
    parser.add_argument("packages", type=Path, nargs="+")
    parser.add_argument("--tag", help="release tag, e.g. obert-core-v0.1.0")
    args = parser.parse_args()
    problems = [
        problem
        for package in args.packages
        for problem in _check_package(args.dist, package, args.tag)
    ]
    if args.tag is not None and not any(args.tag.startswith(f"{p.name}-v") for p in args.packages):
        problems.append(f"{args.tag}: names none of {[p.name for p in args.packages]}")
    for problem in problems:
        print(f"check_dists: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

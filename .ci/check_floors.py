"""Check that every `>=` floor the workspace members declare is the version `uv lock --resolution lowest-direct`
resolved, so each floor is one the lowest-direct test run really exercised.

    python3 .ci/check_floors.py LOWEST_LOCK [LOCK]

Prints one row per floor (package, floor, lowest-direct version, version in LOCK) and fails when a package
resolved above its floor (a floor lower than what some other requirement allows is not proven: raise it).
"""

import re
import sys
import tomllib
from pathlib import Path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.match(r"\d+(\.\d+)*", version).group(0).split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def floors() -> dict[str, tuple[str, set[str]]]:
    """{package: (floor, {member that declares it, ...})} over dependencies, extras and dependency groups."""
    found: dict[str, tuple[str, set[str]]] = {}
    for pyproject in sorted(Path("packages").glob("*/pyproject.toml")) + [Path("pyproject.toml")]:
        data = tomllib.loads(pyproject.read_text())
        member = data["project"]["name"]
        reqs = list(data["project"].get("dependencies", []))
        reqs += [r for extra in data["project"].get("optional-dependencies", {}).values() for r in extra]
        reqs += [
            r for group in data.get("dependency-groups", {}).values() for r in group if isinstance(r, str)
        ]
        for req in reqs:
            m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*([^;]*)", req)
            floor = re.search(r">=\s*([0-9][^,\s]*)", m.group(3))
            if not floor:
                continue
            name = normalize(m.group(1))
            old = found.get(name)
            if old and release(old[0]) != release(floor.group(1)):
                sys.exit(
                    f"{name}: floors differ between members ({old[0]} in {sorted(old[1])}, "
                    f"{floor.group(1)} in {member}); the lock resolves one version, so use one floor"
                )
            found.setdefault(name, (floor.group(1), set()))[1].add(member)
    return found


def versions(lock: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for package in tomllib.loads(lock.read_text())["package"]:
        out.setdefault(normalize(package["name"]), []).append(package["version"])
    return out


def main() -> int:
    lowest = versions(Path(sys.argv[1]))
    locked = versions(Path(sys.argv[2])) if len(sys.argv) > 2 else {}
    bad = []
    print(f"{'package':20} {'floor':10} {'lowest-direct':14} locked")
    for name, (floor, _members) in sorted(floors().items()):
        got = sorted(lowest.get(name, []), key=release)
        print(f"{name:20} {floor:10} {', '.join(got):14} {', '.join(locked.get(name, []))}")
        if got and release(got[0]) != release(floor):
            bad.append(f"{name}: floor {floor} but lowest-direct resolved {got[0]}")
    for line in bad:
        print("FLOOR NOT PROVEN:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

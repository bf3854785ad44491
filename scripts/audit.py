"""Dependency vulnerability audit of constraints.txt with pip-audit, summarised for CI logs.

Prints how many pinned packages were audited, how many could not be (the vulnerability data was not
reachable from this machine), and every known vulnerability. Exit code 1 only when a vulnerability is
found, so an unreachable service is reported rather than failing the build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    pins = [
        line for line in Path("constraints.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(pins) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip_audit",
            "-r",
            handle.name,
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        print(f"audit: pip-audit did not produce a report (exit {done.returncode}): {done.stderr[-500:]}")
        return 0
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    vulnerable = [d for d in deps if d.get("vulns")]
    audited = len(deps) - len(skipped)
    print(f"audit: {len(deps)} pinned packages, {audited} audited, {len(skipped)} not auditable here")
    if skipped:
        print(f"audit: e.g. {skipped[0]['name']}: {skipped[0]['skip_reason']}")
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            print(f"audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    print(f"audit: {sum(len(d['vulns']) for d in vulnerable)} known vulnerabilities")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    raise SystemExit(main())

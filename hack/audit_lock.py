"""``make audit``: pip-audit on the hashed lock, with an answer CI can act on.

pip-audit says "Dependency not found on PyPI and could not be audited" for a package whose
vulnerability service did not answer, and still exits 0: a network failure would pass as a
clean audit. This wrapper reads pip-audit's JSON and exits

- 0: every locked package was checked and none has a known vulnerability;
- 1: a locked package has a known vulnerability (listed with its fixed versions), or
  pip-audit failed in a way that is not the service's;
- 3: the vulnerability service could not be asked about some package: NOT audited
  (``--allow-unaudited``: 0, with a warning; a vulnerability found still exits 1).

``--db FILE`` audits offline: an OSV database (a .zip or a folder of OSV JSON records, such
as OSV's ``PyPI/all.zip`` export, or one JSON file holding a record or a list of them) is
served on a loopback port with OSV's ``/v1/query`` API and pip-audit asks it (``-s osv
--osv-url``). Runs with the supply-chain tools' interpreter (pip-audit brings ``packaging``).
Arguments it does not know (``--ignore-vuln ID``, ...) go to pip-audit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

EXIT_VULNERABLE = 1
EXIT_NOT_AUDITED = 3

Record = dict[str, Any]


def load_db(path: Path) -> dict[str, list[Record]]:
    """OSV records by the canonical name of each PyPI package they affect."""
    texts: list[str] = []
    if path.is_dir():
        texts = [p.read_text() for p in sorted(path.rglob("*.json"))]
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            texts = [archive.read(n).decode() for n in archive.namelist() if n.endswith(".json")]
    else:
        texts = [path.read_text()]
    index: dict[str, list[Record]] = {}
    for text in texts:
        loaded = json.loads(text)
        for record in loaded if isinstance(loaded, list) else [loaded]:
            names = {
                canonicalize_name(a["package"]["name"])
                for a in record.get("affected", [])
                if a.get("package", {}).get("ecosystem") == "PyPI"
            }
            for name in names:
                index.setdefault(name, []).append(record)
    return index


def _version(text: str) -> Version:
    return Version("0") if text == "0" else Version(text)


def affects(record: Record, name: str, version: str) -> bool:
    """Whether the OSV record covers ``name`` at ``version`` (explicit versions or
    ECOSYSTEM ranges: introduced / fixed / last_affected events)."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        return False
    for affected in record.get("affected", []):
        package = affected.get("package", {})
        if package.get("ecosystem") != "PyPI" or canonicalize_name(package["name"]) != name:
            continue
        if version in affected.get("versions", []):
            return True
        for span in affected.get("ranges", []):
            if span.get("type") != "ECOSYSTEM":
                continue
            events = sorted(
                ((_version(v), kind) for e in span["events"] for kind, v in e.items()),
                key=lambda event: event[0],
            )
            hit = False
            for at, kind in events:
                past = wanted > at if kind == "last_affected" else wanted >= at
                if past:
                    hit = kind == "introduced"
            if hit:
                return True
    return False


def _canonical(record: Record) -> Record:
    """The record with PyPI package names canonical: pip-audit compares them as they are
    with the canonical name when it looks for the fixed versions."""
    affected = [
        {**a, "package": {**a["package"], "name": canonicalize_name(a["package"]["name"])}}
        if a.get("package", {}).get("ecosystem") == "PyPI"
        else a
        for a in record.get("affected", [])
    ]
    return {**record, "affected": affected}


@contextlib.contextmanager
def serve_osv(db: dict[str, list[Record]]) -> Iterator[str]:
    """OSV's query API on a loopback port, answering from ``db``; yields its URL."""

    class Query(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            name = canonicalize_name(body["package"]["name"])
            vulns = [_canonical(r) for r in db.get(name, []) if affects(r, name, body["version"])]
            answer = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Query)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    finally:
        server.shutdown()
        server.server_close()


def audit(
    pip_audit: str,
    lock: Path,
    service_args: list[str],
    extra: list[str],
    allow_unaudited: bool = False,
) -> int:
    with tempfile.TemporaryDirectory(prefix="signet-audit-") as scratch:
        report = Path(scratch) / "audit.json"
        command = [
            pip_audit, "--disable-pip", "--require-hashes", "-r", str(lock),
            "--progress-spinner", "off", "--format", "json", "--desc", "on",
            "--output", str(report), *service_args, *extra,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if not report.exists():
            sys.stderr.write(result.stdout[-2000:] + result.stderr[-3000:])
            if allow_unaudited:
                print(
                    "WARNING: NOT AUDITED: pip-audit could not ask the vulnerability service "
                    f"({' '.join(service_args)}; exit {result.returncode}, output above). "
                    "Allowed (--allow-unaudited).",
                    file=sys.stderr,
                )
                return 0
            print(
                f"NOT AUDITED: pip-audit could not ask the vulnerability service "
                f"({' '.join(service_args)}; exit {result.returncode}, output above)",
                file=sys.stderr,
            )
            return EXIT_NOT_AUDITED
        dependencies: list[dict[str, Any]] = json.loads(report.read_text())["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed version"
            aliases = ", ".join(vuln.get("aliases", []))
            print(
                f"VULNERABLE {dependency['name']}=={dependency['version']}: {vuln['id']}"
                f"{f' ({aliases})' if aliases else ''}; fixed in: {fixed}\n"
                f"    {vuln.get('description', '')[:300]}"
            )
    for dependency in skipped:
        print(f"not audited: {dependency['name']}: {dependency['skip_reason']}")
    where = " ".join(service_args)
    if vulnerable:
        print(
            f"{len(vulnerable)} of {len(dependencies)} locked packages have known "
            f"vulnerabilities ({where})",
            file=sys.stderr,
        )
        return EXIT_VULNERABLE
    if skipped and allow_unaudited:
        print(
            f"WARNING: NOT AUDITED: {len(skipped)} of {len(dependencies)} locked packages "
            f"could not be checked ({where}): the service did not answer for them. Allowed "
            "(--allow-unaudited); a known vulnerability would still have failed.",
            file=sys.stderr,
        )
        return 0
    if skipped:
        print(
            f"NOT AUDITED: {len(skipped)} of {len(dependencies)} locked packages could not "
            f"be checked ({where}): the service did not answer for them. Nothing was found, "
            "but that is not a clean audit.",
            file=sys.stderr,
        )
        return EXIT_NOT_AUDITED
    print(f"audited {len(dependencies)} locked packages ({where}): no known vulnerabilities")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pip-audit", default="pip-audit")
    parser.add_argument("--service", default="pypi", choices=["pypi", "osv"])
    parser.add_argument("--db", type=Path, help="audit offline against this OSV database")
    parser.add_argument(
        "--allow-unaudited",
        action="store_true",
        help="exit 0 (with a warning) when the service could not be asked",
    )
    parser.add_argument("lock", type=Path)
    args, extra = parser.parse_known_args(argv)
    if args.db is None:
        service = ["-s", args.service]
        return audit(args.pip_audit, args.lock, service, extra, args.allow_unaudited)
    with serve_osv(load_db(args.db)) as url:
        service = ["-s", "osv", "--osv-url", url]
        return audit(args.pip_audit, args.lock, service, extra, args.allow_unaudited)


if __name__ == "__main__":
    sys.exit(main())

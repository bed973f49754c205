"""`xds-server ca ...`: create the built-in CA and issue workload certificates to files.

``ca init`` writes Istio's ``cacerts`` layout; ``ca issue`` writes the three files an
Envoy (file-based SDS) or a gRPC ``file_watcher`` certificate provider reads to reach the
xDS port: ``cert-chain.pem``, ``key.pem`` (0600) and ``root-cert.pem``, the names
istio-agent writes for its output-certificates directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Final, NoReturn

from xds_server.identity.ca import CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, CertificateAuthority
from xds_server.identity.pki import CaError, TrustBundle, issued_by, pem, write_file
from xds_server.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, SpiffeIdError

# What `ca issue --out DIR` writes (istio-agent's OUTPUT_CERTS names).
CERT_CHAIN_FILE: Final = "cert-chain.pem"
KEY_FILE: Final = "key.pem"
ROOT_CERT_FILE: Final = "root-cert.pem"

_TTL = re.compile(r"^(\d+(?:\.\d*)?)(s|m|h|d)$")
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _ttl(value: str) -> dt.timedelta:
    m = _TTL.match(value.strip())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive duration like 24h, 90m, 7d")
    return dt.timedelta(seconds=float(m.group(1)) * _TTL_UNITS[m.group(2)])


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xds-server ca", description="The built-in certificate authority.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    init = sub.add_parser(
        "init",
        help="create a self-signed root CA (Istio's cacerts layout)",
        description="Write root-cert.pem, ca-cert.pem, ca-key.pem (0600) and cert-chain.pem "
        "into DIR. An existing CA is never overwritten.",
    )
    init.add_argument("--dir", type=Path, required=True, metavar="DIR")
    init.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN, help="(else %(default)s)")
    issue = sub.add_parser(
        "issue",
        help="issue a workload certificate to files",
        description="Write cert-chain.pem (certificate and intermediates), key.pem (0600) and "
        "root-cert.pem (trust bundle) into --out, for Envoy's file-based SDS or gRPC's "
        "file_watcher certificate provider.",
    )
    issue.add_argument("--ca-dir", type=Path, required=True, metavar="DIR", help="cacerts layout")
    issue.add_argument("--namespace", required=True)
    issue.add_argument("--service-account", required=True)
    issue.add_argument(
        "--trust-domain",
        default=None,
        help="(else the CA's organization, else " + DEFAULT_TRUST_DOMAIN + ")",
    )
    issue.add_argument("--ttl", type=_ttl, default=dt.timedelta(hours=24), help="(else 24h)")
    issue.add_argument("--out", type=Path, required=True, metavar="DIR")
    rotate = sub.add_parser(
        "rotate",
        help="replace the CA with a new root, trusting old and new roots meanwhile",
        description="Write a new self-signed root into DIR as the signing CA, with "
        "root-cert.pem holding the new and the old roots. A server watching DIR "
        "(--ca-dir) pushes the two-root ROOTCA, then signs with the new key, without a "
        "failed request. With --finish, drop the old roots from root-cert.pem once every "
        "certificate they signed has been replaced.",
    )
    rotate.add_argument("--dir", type=Path, required=True, metavar="DIR")
    rotate.add_argument("--finish", action="store_true", help="drop the old roots")
    return p


def _init(args: argparse.Namespace) -> None:
    ca = CertificateAuthority.create_root(args.trust_domain)
    ca.save_dir(args.dir)
    print(f"created CA for trust domain {args.trust_domain} in {args.dir}")


def _issue(args: argparse.Namespace) -> None:
    ca = CertificateAuthority.load_dir(args.ca_dir)
    trust_domain = args.trust_domain or ca.trust_domain or DEFAULT_TRUST_DOMAIN
    spiffe_id = SpiffeId(trust_domain, args.namespace, args.service_account)
    workload = ca.issue(spiffe_id, ttl=args.ttl)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_file(out / KEY_FILE, workload.key_pem(), private=True)
    write_file(out / CERT_CHAIN_FILE, workload.cert_chain_pem())
    write_file(out / ROOT_CERT_FILE, workload.trust_bundle.pem())
    print(
        f"issued {spiffe_id} serial {workload.serial:x} valid until "
        f"{workload.not_after.isoformat()} in {out}"
    )


def _rotate(args: argparse.Namespace) -> None:
    directory: Path = args.dir
    ca = CertificateAuthority.load_dir(directory)
    if args.finish:
        top = (ca.certificate, *ca.chain)[-1]
        kept = tuple(r for r in ca.trust_bundle.roots if issued_by(top, r))
        if len(kept) == len(ca.trust_bundle.roots):
            raise CaError(f"{directory}: no old root to drop (rotate first)")
        write_file(directory / ROOT_CERT, TrustBundle(kept).pem())
        print(f"dropped {len(ca.trust_bundle.roots) - len(kept)} old roots in {directory}")
        return
    new = CertificateAuthority.create_root(ca.trust_domain or DEFAULT_TRUST_DOMAIN)
    bundle = TrustBundle((new.certificate, *ca.trust_bundle.roots))
    # The bundle first: a server reading the directory half-way sees the old CA with
    # both roots (consistent), or a key that does not match its certificate (refused,
    # retried on the next change), never a CA whose root it does not trust.
    write_file(directory / ROOT_CERT, bundle.pem())
    write_file(directory / CA_KEY, new.key.pem(), private=True)
    write_file(directory / CERT_CHAIN, pem((new.certificate,)))
    write_file(directory / CA_CERT, pem((new.certificate,)))
    print(
        f"new root serial {new.certificate.serial_number:x} in {directory}; "
        f"root-cert.pem trusts {len(bundle.roots)} roots until `ca rotate --finish`"
    )


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            _init(args)
        elif args.command == "rotate":
            _rotate(args)
        else:
            _issue(args)
    except (CaError, SpiffeIdError) as exc:
        print(f"xds-server ca {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"xds-server ca {args.command}: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0

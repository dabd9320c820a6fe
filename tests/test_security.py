"""TLS, mutual TLS and bearer tokens, against the real server binary with
certificates made here: what a backend in the cluster does, and what is
refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ranker.features.spec import FEATURE_NAMES
from ranker.serving.client import RankerClient, TLSOptions, is_loopback, request_from_matrix
from ranker.serving.process import ServerProcess
from ranker_client import RankerError
from tests.support import REPO, golden_rows, metric_value, scrape_metrics
from tests.test_grpcurl import grpcurl  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e  # every test here runs the Go server binary

SERVER_NAME = "ranker.test"  # the only name in the server's certificate
TOKENS = {
    "backend": "backend-token-0123",
    "catalog": "catalog-token-4567",
    "loader": "loader-token-89ab",
}


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class CA:
    """A certificate authority made for the test run."""

    def __init__(self, name: str, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            _builder(subject, subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.name = name
        self.file = directory / f"{name}.crt"
        self.file.write_bytes(self.pem)

    def issue(self, name: str, *, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = (
            x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
            if server
            else (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH)
        )
        builder = _builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False
            )
        stem = self.directory / f"{self.name}-{name}"
        issued = Issued(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        issued.cert.write_bytes(
            builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return issued


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
    )


@dataclass(frozen=True)
class PKI:
    ca: CA
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from another CA
    tokens: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA("ranker-ca", directory)
    tokens = directory / "tokens"
    tokens.write_text(
        "# name  roles   credential\n"
        f"backend rank    sha256:{hashlib.sha256(TOKENS['backend'].encode()).hexdigest()}\n"
        f"catalog ingest  sha256:{hashlib.sha256(TOKENS['catalog'].encode()).hexdigest()}\n"
        # `ranker load` reads the model's features (info), then ingests.
        f"loader  ingest,info sha256:{hashlib.sha256(TOKENS['loader'].encode()).hexdigest()}\n"
    )
    return PKI(
        ca=ca,
        server=ca.issue("ranker", server=True),
        client=ca.issue("backend"),
        stranger=CA("other-ca", directory).issue("backend"),
        tokens=tokens,
    )


def _mtls(
    pki: PKI, client: Issued | None = None, server_name: str | None = SERVER_NAME
) -> TLSOptions:
    return TLSOptions(
        root_ca=pki.ca.file,
        client_cert=client.cert if client else None,
        client_key=client.key if client else None,
        server_name=server_name,
    )


def _secure(server_binary: Path, model_dir: Path, ort_lib: Path, pki: PKI) -> ServerProcess:
    """The server as the Kubernetes manifests run it: mutual TLS and tokens."""
    return ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=[
            f"--tls-cert={pki.server.cert}",
            f"--tls-key={pki.server.key}",
            f"--tls-client-ca={pki.ca.file}",
            f"--auth-tokens={pki.tokens}",
        ],
        tls=_mtls(pki, pki.client),
    )


@pytest.fixture(scope="module")
def secure_server(
    server_binary: Path, model_dir: Path, ort_lib: Path, pki: PKI
) -> Iterator[ServerProcess]:
    with _secure(server_binary, model_dir, ort_lib, pki) as running:
        yield running


def _rank(
    server: ServerProcess, model_dir: Path, *, tls: TLSOptions | None, token: str | None
) -> int:
    rows = golden_rows(model_dir, 5, case="sample")
    with RankerClient(server.target, tls=tls, token=token) as ranker:
        return len(ranker.rank(request_from_matrix(FEATURE_NAMES, rows, request_id="s")).candidates)


def test_rank_over_mutual_tls_with_the_right_token(
    secure_server: ServerProcess, model_dir: Path, pki: PKI
) -> None:
    assert _rank(secure_server, model_dir, tls=_mtls(pki, pki.client), token=TOKENS["backend"]) == 5


def test_certificate_files_and_bytes_are_the_same(
    secure_server: ServerProcess, model_dir: Path, pki: PKI
) -> None:
    as_bytes = TLSOptions(
        root_ca=pki.ca.pem,
        client_cert=pki.client.cert.read_bytes(),
        client_key=pki.client.key.read_bytes(),
        server_name=SERVER_NAME,
    )
    assert _rank(secure_server, model_dir, tls=as_bytes, token=TOKENS["backend"]) == 5


@pytest.mark.parametrize(
    ("token", "code", "says"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED, "authorization: Bearer <token>"),
        ("not-a-token", grpc.StatusCode.UNAUTHENTICATED, "bearer token not recognized"),
        (
            TOKENS["catalog"],
            grpc.StatusCode.PERMISSION_DENIED,
            'method /ranker.v1.RankingService/Rank needs role "rank"; caller "catalog"',
        ),
    ],
)
def test_rank_without_the_right_token_is_refused(
    secure_server: ServerProcess,
    model_dir: Path,
    pki: PKI,
    token: str | None,
    code: grpc.StatusCode,
    says: str,
) -> None:
    with pytest.raises(RankerError) as refused:
        _rank(secure_server, model_dir, tls=_mtls(pki, pki.client), token=token)
    assert refused.value.code == code
    assert says in refused.value.message
    assert token is None or token not in refused.value.message
    # Why, in a word a caller can branch on.
    assert refused.value.error_info is not None
    assert refused.value.error_info.domain == "ranker.v1"


@pytest.mark.parametrize(
    "client",
    ["plaintext", "no client certificate", "client certificate from another CA", "wrong name"],
)
def test_a_channel_the_server_cannot_trust_fails(
    secure_server: ServerProcess, model_dir: Path, pki: PKI, client: str
) -> None:
    tls = {
        "plaintext": None,
        "no client certificate": _mtls(pki),
        "client certificate from another CA": _mtls(pki, pki.stranger),
        # The certificate names ranker.test, not the 127.0.0.1 dialled.
        "wrong name": _mtls(pki, pki.client, server_name=None),
    }[client]
    with pytest.raises(RankerError) as refused:
        _rank(secure_server, model_dir, tls=tls, token=TOKENS["backend"])
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_health_needs_no_token_and_refusals_are_counted(
    secure_server: ServerProcess, model_dir: Path, pki: PKI
) -> None:
    with RankerClient(secure_server.target, tls=_mtls(pki, pki.client)) as client:
        assert client.health("ranker.v1.RankingService") == "SERVING"
    before = scrape_metrics(secure_server)
    with pytest.raises(RankerError):
        _rank(secure_server, model_dir, tls=_mtls(pki, pki.client), token=TOKENS["catalog"])
    after = scrape_metrics(secure_server)
    name = 'ranker_auth_refused_total{method="Rank",reason="missing_role"}'
    assert float(metric_value(after, name)) == float(_value_or_zero(before, name)) + 1


def _value_or_zero(text: str, name: str) -> str:
    return metric_value(text, name) if name in text else "0"


def test_tokens_in_clear_off_loopback_refuse_to_start(
    server_binary: Path, model_dir: Path, ort_lib: Path, pki: PKI
) -> None:
    process = ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=[f"--auth-tokens={pki.tokens}", "--listen=0.0.0.0:0"],
    )
    code, log = process.run_to_exit()
    assert code == 2
    assert "auth-tokens: tokens would travel in clear to 0.0.0.0:0" in log


def test_a_bad_certificate_at_startup_is_named(
    server_binary: Path, model_dir: Path, ort_lib: Path, pki: PKI
) -> None:
    process = ServerProcess(
        server_binary,
        model_dir,
        ort_lib=ort_lib,
        extra_args=[f"--tls-cert={pki.client.key}", f"--tls-key={pki.server.key}"],
    )
    code, log = process.run_to_exit()
    assert code == 1
    assert f"tls-cert {pki.client.key}" in log


def test_the_client_refuses_a_token_in_clear_off_loopback() -> None:
    with pytest.raises(ValueError, match="would travel in clear"):
        RankerClient("ranker.example:50051", token="t")


def test_readme_grpcurl_over_mutual_tls(
    grpcurl: str,  # noqa: F811 (the fixture imported above)
    secure_server: ServerProcess,
    pki: PKI,
) -> None:
    """go/README.md's grpcurl command for a secured server: certificates, a
    token, and the .proto files in place of reflection."""
    reply = subprocess.run(
        [
            grpcurl,
            f"-cacert={pki.ca.file}",
            f"-cert={pki.client.cert}",
            f"-key={pki.client.key}",
            f"-authority={SERVER_NAME}",
            "-H",
            f"authorization: Bearer {TOKENS['backend']}",
            f"-import-path={REPO / 'proto'}",
            "-proto=ranker/v1/ranking_service.proto",
            "-d",
            '{"user_id": "42", "candidates": [{"id": "a1"}, {"id": "a2"}]}',
            secure_server.target,
            "ranker.v1.RankingService/Rank",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert {c["id"] for c in json.loads(reply)["candidates"]} == {"a1", "a2"}


@pytest.mark.parametrize(
    ("target", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("dns:///localhost:50051", True),
        ("10.0.0.7:50051", False),
        ("ranker.news.svc:50051", False),
        ("[::]:50051", False),
    ],
)
def test_loopback_targets(target: str, loopback: bool) -> None:
    assert is_loopback(target) is loopback


def test_a_client_certificate_needs_its_key(pki: PKI) -> None:
    with pytest.raises(ValueError, match="client_cert and client_key go together"):
        TLSOptions(root_ca=pki.ca.file, client_cert=pki.client.cert)


def test_the_cli_loads_and_ranks_over_mutual_tls_with_tokens(
    server_binary: Path,
    model_dir: Path,
    ort_lib: Path,
    pki: PKI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ranker load` and `ranker rank` take the TLS options and a token as
    the Go client's example does; a refused token is one line and exit 2."""
    from ranker.cli import main
    from ranker.data.world import WorldConfig, generate

    world = tmp_path / "world"
    generate(WorldConfig(seed=13).scaled(0.02)).write(world)
    with _secure(server_binary, model_dir, ort_lib, pki) as server:
        tls = ["--target", server.target, "--ca", str(pki.ca.file), "--server-name", SERVER_NAME]
        tls += ["--cert", str(pki.client.cert), "--key", str(pki.client.key)]
        assert main(["load", "--data", str(world), *tls, "--token", TOKENS["loader"]]) == 0
        assert capsys.readouterr().out.splitlines()[-1].endswith("; 0 rejected")
        ids = ["0", "1", "no-such-article"]
        assert main(["rank", *tls, "--token", TOKENS["backend"], "--user", "7", *ids]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[-1] == "unknown to the server (no catalog row): no-such-article"
        assert main(["rank", *tls, "--token", TOKENS["catalog"], "--user", "7", *ids]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"ranker rank: error: the server at {server.target} refused the call (PERMISSION_DENIED"
    )

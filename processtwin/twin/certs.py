"""Self-signed X.509 application instance certificates for OPC UA.

OPC UA authenticates applications, not hosts: each side of a secure channel presents an
application instance certificate whose subjectAltName holds the application URI (OPC
10000-4 §6.1, OPC 10000-6 §6.2.2) next to the DNS names and IP addresses it runs on.
The certificates written here follow that profile for Basic256Sha256: RSA 2048 keys,
SHA-256 signatures, key usage digitalSignature, nonRepudiation, keyEncipherment,
dataEncipherment (plus keyCertSign: a self-signed certificate signs itself, §6.2.2),
extended key usage serverAuth and clientAuth. Certificates are written as DER (the
encoding OPC UA puts on the wire), private keys as unencrypted PKCS#8 PEM readable by
the owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ConfigError

__all__ = ["CertificateSet", "application_uri_of", "generate_certificate",
           "generate_certificates", "load_certificate"]

#: RSA modulus of the keys [bit]: the Basic256Sha256 policy allows 2048 to 4096.
KEY_BITS = 2048


@dataclass(frozen=True)
class CertificateSet:
    """The files of one server and one client certificate pair.

    Attributes
    ----------
    server_certificate, server_private_key : Path
        The plant server's certificate (DER) and private key (PEM).
    client_certificate, client_private_key : Path
        The twin client's certificate (DER) and private key (PEM).
    server_uri, client_uri : str
        The application URIs in the certificates' subjectAltName.
    server_certificate_pem, client_certificate_pem : Path
        The same certificates in PEM, as TLS libraries (MQTT over TLS, Mosquitto's
        ``cafile``/``certfile``) read them.
    """

    server_certificate: Path
    server_private_key: Path
    client_certificate: Path
    client_private_key: Path
    server_uri: str
    client_uri: str
    server_certificate_pem: Path
    client_certificate_pem: Path


def _default_hostnames() -> list[str]:
    names = ["localhost", "127.0.0.1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


def generate_certificate(certificate: str | Path, private_key: str | Path, *,
                         application_uri: str, common_name: str, days: int = 365,
                         hostnames: Sequence[str] | None = None,
                         overwrite: bool = False) -> tuple[Path, Path]:
    """Write one self-signed OPC UA application instance certificate and its key.

    Parameters
    ----------
    certificate : str or Path
        Where the certificate goes (DER; ``.der`` by convention).
    private_key : str or Path
        Where the private key goes (PEM, PKCS#8, unencrypted, mode 0600).
    application_uri : str
        The application's URI (``urn:…``), put in subjectAltName as OPC UA requires; the
        application must announce the same URI when it connects.
    common_name : str
        Subject common name (the application's name).
    days : int
        Validity from now [d].
    hostnames : sequence of str, optional
        Host names and IP addresses the application runs on (IP literals become IP
        SANs, the rest DNS SANs); default ``localhost``, ``127.0.0.1`` and this host's
        name.
    overwrite : bool
        Replace existing files; otherwise an existing file is an error.

    Returns
    -------
    tuple of Path
        ``(certificate, private_key)``.

    Raises
    ------
    ConfigError
        A non-positive validity, an application URI that is not a URN or URL, or a
        file that exists and ``overwrite`` is off.
    """
    cert_path, key_path = Path(certificate), Path(private_key)
    if not (isinstance(days, int) and days > 0):
        raise ConfigError(f"`days` must be a positive integer [d], got {days!r}.")
    if ":" not in application_uri:
        raise ConfigError(f"`application_uri` must be a URI such as `urn:host:app`, got "
                          f"{application_uri!r}.")
    for p in (cert_path, key_path):
        if p.exists() and not overwrite:
            raise ConfigError(f"{p} exists; pass `overwrite=True` to replace it.")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for h in (_default_hostnames() if hostnames is None else list(hostnames)):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "processtwin")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # a minute's slack for clocks that differ slightly between the two hosts
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                         key_encipherment=True, data_encipherment=True,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ski), critical=False)
            .sign(key, hashes.SHA256()))
    for p in (cert_path, key_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # the key is created readable by the owner only, never world-readable for a moment
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def generate_certificates(out_dir: str | Path, *, common_name: str = "processtwin",
                          days: int = 365, hostnames: Sequence[str] | None = None,
                          overwrite: bool = False) -> CertificateSet:
    """Write a server and a client certificate pair for an encrypted OPC UA link (or
    an MQTT connection over TLS with client certificates).

    Parameters
    ----------
    out_dir : str or Path
        Folder for ``server_cert.der``, ``server_key.pem``, ``client_cert.der`` and
        ``client_key.pem`` (created if missing), and PEM copies of the certificates,
        ``server_cert.pem`` and ``client_cert.pem``.
    common_name : str
        Base of the subject names (``<common_name> plant server`` / ``… twin client``)
        and of the application URIs ``urn:<common_name>:server`` / ``…:client``.
    days : int
        Validity from now [d].
    hostnames : sequence of str, optional
        Host names and IP addresses for the subjectAltName (default ``localhost``,
        ``127.0.0.1`` and this host's name).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    CertificateSet
        The four paths and the two application URIs.

    Raises
    ------
    ConfigError
        See :func:`generate_certificate`.
    """
    out = Path(out_dir)
    for name in ("server_cert.pem", "client_cert.pem"):
        if (out / name).exists() and not overwrite:
            raise ConfigError(f"{out / name} exists; pass `overwrite=True` to replace it.")
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in common_name)
    server_uri, client_uri = f"urn:{slug}:server", f"urn:{slug}:client"
    sc, sk = generate_certificate(out / "server_cert.der", out / "server_key.pem",
                                  application_uri=server_uri,
                                  common_name=f"{common_name} plant server", days=days,
                                  hostnames=hostnames, overwrite=overwrite)
    cc, ck = generate_certificate(out / "client_cert.der", out / "client_key.pem",
                                  application_uri=client_uri,
                                  common_name=f"{common_name} twin client", days=days,
                                  hostnames=hostnames, overwrite=overwrite)
    pems = []
    for der in (sc, cc):
        pem = der.with_suffix(".pem")
        pem.write_bytes(load_certificate(der).public_bytes(serialization.Encoding.PEM))
        pems.append(pem)
    return CertificateSet(sc, sk, cc, ck, server_uri, client_uri, *pems)


def load_certificate(path: str | Path) -> x509.Certificate:
    """Read a certificate, DER or PEM.

    Parameters
    ----------
    path : str or Path
        The certificate file.

    Returns
    -------
    cryptography.x509.Certificate
        The certificate.

    Raises
    ------
    ConfigError
        The file is missing or holds no certificate.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"certificate {p}: cannot be read ({e.strerror}).") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise ConfigError(f"certificate {p}: expected a DER or PEM X.509 certificate."
                          ) from None


def application_uri_of(path: str | Path) -> str:
    """The application URI in a certificate's subjectAltName.

    Parameters
    ----------
    path : str or Path
        The certificate file (DER or PEM).

    Returns
    -------
    str
        The URI an application presenting this certificate must announce.

    Raises
    ------
    ConfigError
        The certificate holds no URI in subjectAltName (not an OPC UA application
        instance certificate).
    """
    cert = load_certificate(path)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    uris = [] if san is None else san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise ConfigError(f"certificate {path}: no application URI in subjectAltName, as "
                          "OPC UA requires (OPC 10000-4 §6.1).")
    return str(uris[0])

"""TLS for ``https://`` servers: which certificates the client trusts.

- With ``ca_file``, the server's chain must lead to a certificate in that
  PEM file (a CA, or the server's very certificate) and name the URL's host.
- With ``fingerprint``, the server's certificate must be exactly that one
  (the SHA-256 that ``taskdeck serve`` prints), whatever its names and dates:
  how a self-signed certificate is trusted.
- With neither, the system's trusted authorities, as a browser would.

The check is done right after the handshake, before the request (and its
token) is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import ssl
from typing import Optional

__all__ = ["Tls", "parse_fingerprint"]


def parse_fingerprint(text: str) -> bytes:
    """The 32 bytes of a SHA-256 fingerprint written as 64 hex digits
    (colons and spaces allowed, as ``taskdeck serve`` prints it)."""
    digits = text.strip()
    for prefix in ("sha256:", "SHA256:"):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
    digits = "".join(c for c in digits if c != ":" and not c.isspace())
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ValueError(
            f"{text!r} is not a SHA-256 fingerprint: 64 hex digits, colons allowed "
            "(as `taskdeck serve` prints it)"
        )
    return value


def _hex(value: bytes) -> str:
    return ":".join(f"{b:02X}" for b in value)


class Tls:
    """How to open TLS sessions to one server.

    Raises ``ValueError`` for options that cannot work (both given, a
    fingerprint that is not one, a CA file that cannot be read).
    """

    def __init__(self, ca_file: Optional[str] = None, fingerprint: Optional[str] = None) -> None:
        if ca_file and fingerprint:
            raise ValueError("give ca_file or fingerprint, not both")
        self.pin: Optional[bytes] = parse_fingerprint(fingerprint) if fingerprint else None
        if self.pin is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            # The pin stands in for names and authorities; the session still
            # proves the server holds the certificate's key.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"cannot use the CA file {ca_file!r}: {error}") from error
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context = context

    def wrap(self, sock: socket.socket, host: str) -> ssl.SSLSocket:
        """The TLS session over ``sock`` once the server passed; raises
        ``ssl.SSLCertVerificationError`` (an ``OSError``) when it did not,
        with the socket closed."""
        wrapped = self.context.wrap_socket(sock, server_hostname=host)
        if self.pin is not None:
            der = wrapped.getpeercert(binary_form=True) or b""
            seen = hashlib.sha256(der).digest()
            if not hmac.compare_digest(seen, self.pin):
                wrapped.close()
                raise ssl.SSLCertVerificationError(
                    f"the server's certificate is refused: its SHA-256 fingerprint is {_hex(seen)}, "
                    f"not the pinned {_hex(self.pin)}"
                )
        return wrapped

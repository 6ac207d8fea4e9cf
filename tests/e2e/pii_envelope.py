"""An independent reader of meshgate's field envelope, written from its documentation
(src/protect/envelope.rs and src/protect/keys.rs), with Python's `cryptography`: the
differential check that what meshgate seals is what it says it seals.

    mg1:<kid>:<base64url, no padding, of nonce (12) | ciphertext | tag (16)>
    AES-256-GCM; associated data b"meshgate/pii/v1\\n" + topic + "\\n" + field path + "\\n" + kid;
    the plaintext is the field's JSON text (JSON values), or its bytes (Avro string and bytes
    fields, sealed in place: the envelope's text becomes the field's value).

Data keys are in <key_dir>/<topic>/<kid>.key (JSON, "wrapped" in base64); with the local KMS the
wrapped key is nonce (12) | ciphertext | tag (16) under the key-encryption key, with associated
data b"meshgate/dek/v1\\n" + topic + "\\n" + kid.
"""

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def data_key(key_dir: Path, kek: bytes, topic: str, kid: str) -> bytes:
    f = json.loads((key_dir / topic / f"{kid}.key").read_text())
    assert f["topic"] == topic and f["kid"] == kid, f
    wrapped = base64.b64decode(f["wrapped"])
    context = f"meshgate/dek/v1\n{topic}\n{kid}".encode()
    return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], context)


def open_bytes(envelope: str, topic: str, path: str, key_dir: Path, kek: bytes) -> bytes:
    """The sealed plaintext, from an envelope."""
    prefix, kid, sealed = envelope.split(":", 2)
    assert prefix == "mg1", envelope
    raw = b64url(sealed)
    aad = f"meshgate/pii/v1\n{topic}\n{path}\n{kid}".encode()
    return AESGCM(data_key(key_dir, kek, topic, kid)).decrypt(raw[:12], raw[12:], aad)


def open_field(envelope: str, topic: str, path: str, key_dir: Path, kek: bytes):
    """A JSON value's field (as JSON), from its envelope."""
    return json.loads(open_bytes(envelope, topic, path, key_dir, kek))

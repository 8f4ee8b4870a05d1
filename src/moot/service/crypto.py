"""Provider API keys encrypted at rest with Fernet; the key comes from MOOT_SECRET_KEY or a 0600 file."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from moot.exceptions import ConfigError
from moot.settings import Settings

_GENERATE = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


class Cipher:
    """Encrypts and decrypts provider keys. Its repr shows nothing of the key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise ConfigError(
                f"MOOT_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes); make one with {_GENERATE}"
            ) from None

    def __repr__(self) -> str:
        return "Cipher(...)"

    @classmethod
    def from_settings(cls, settings: Settings) -> Cipher:
        """MOOT_SECRET_KEY when set; else the data directory's key file, made on first use."""
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value().encode())
        return cls(_key_file(settings.secret_key_file))

    def encrypt(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def decrypt(self, token: bytes) -> str:
        """The plain key; ConfigError when it was encrypted under another secret key."""
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise ConfigError(
                "a stored API key cannot be decrypted: the secret key changed since it was stored; "
                "restore MOOT_SECRET_KEY (or the data directory's secret.key), or give the provider its key again"
            ) from None


def _key_file(path: Path) -> bytes:
    """Reads the key file, or creates it with mode 0600 so only this user can read it."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(key)
    return key

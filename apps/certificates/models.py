from __future__ import annotations

from django.db import models
from django.utils import timezone


class IssuedCertificate(models.Model):
    """The latest certificate issued over ACME and its private key, sealed
    (mailhost/sealing.py), so that every node's listeners serve it: the
    renewing node writes it here, the others install it from here
    (apps/certificates/storage.py), and each node's files are a cache.
    The primary key is the version: a newer issue has a greater one."""

    chain_pem = models.TextField()
    sealed_key = models.TextField()
    issued = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"certificate {self.pk} issued {self.issued:%Y-%m-%d %H:%M}"

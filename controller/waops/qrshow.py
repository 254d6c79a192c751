"""Show a link request: a QR code in the terminal (ASCII) and as an image file, or a pairing code.

The QR string comes from the bot's health file (contract 5), read by `reset_session.yml` (exposed with
set_stats as `waops_link`) or by `waops qr`; what to show is a `waops.model.LinkRequest`. The image is
a PNG when pypng is installed (qrcode's PIL-free PNG writer), else an SVG (qrcode's own SVG writer, no
extra dependency).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any


def ascii_qr(data: str) -> str:
    """The QR code drawn with block characters, light on dark terminals too (inverted)."""
    import qrcode

    qr = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_L)
    qr.add_data(data)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def save_qr(data: str, directory: Path, stem: str) -> Path:
    """Write the QR code as PNG (pypng) or SVG; returns the file. 0600: whoever scans it links the bot."""
    import qrcode

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        from qrcode.image.pure import PyPNGImage

        factory: Any = PyPNGImage
        path = directory / f"{stem}.png"
        img = qrcode.make(data, image_factory=factory)
    except ImportError:  # pypng is not installed
        from qrcode.image.svg import SvgPathImage

        path = directory / f"{stem}.svg"
        img = qrcode.make(data, image_factory=SvgPathImage)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        img.save(f)
    return path


def pairing_text(code: str) -> str:
    """`ABCD-1234`: the way WhatsApp shows it, easier to type."""
    c = code.strip().upper()
    return f"{c[:4]}-{c[4:]}" if len(c) == 8 else c

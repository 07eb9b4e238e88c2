"""Matplotlib set-up for report figures: headless backend and a CJK font so Chinese labels render.

Intent labels, example texts and category names are often Chinese. Matplotlib's bundled DejaVu
Sans has no CJK glyphs, so without help they render as empty boxes. :func:`setup_matplotlib` finds
a CJK font on the system (``$LINGXI_CJK_FONT``, then ``fc-list :lang=zh``, then well-known font
folders) and puts it *after* DejaVu Sans in ``font.family``: Latin text keeps its usual look and
matplotlib (≥ 3.6) falls back glyph by glyph to the CJK font. With no CJK font it warns once
(install ``fonts-noto-cjk``) and figures still render, with boxes for Chinese characters.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

FONT_ENV = "LINGXI_CJK_FONT"
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"),
              str(Path.home() / ".local/share/fonts"), "/System/Library/Fonts", "/Library/Fonts",
              "C:/Windows/Fonts")
_KNOWN = ("NotoSansCJK", "NotoSansSC", "SourceHanSans", "wqy-microhei", "wqy-zenhei", "msyh", "simhei",
          "PingFang", "Hiragino Sans GB", "DroidSansFallback")
_SUFFIXES = (".ttc", ".otf", ".ttf")
NO_FONT_WARNING = ("no CJK font found (install fonts-noto-cjk, or set LINGXI_CJK_FONT to a .ttf/.otf/.ttc "
                   "file): Chinese text in report figures will render as boxes")


def _from_fc_list() -> list[Path]:
    if shutil.which("fc-list") is None:
        return []
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    files = sorted({Path(line.split(":")[0].strip()) for line in out.splitlines() if line.strip()})
    # prefer regular weights of sans families: bold or serif labels read worse in small plots
    return sorted(files, key=lambda p: ("Bold" in p.name or "Serif" in p.name, "Sans" not in p.name, p.name))


def _from_known_dirs() -> list[Path]:
    found: list[Path] = []
    for folder in _FONT_DIRS:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.suffix.lower() in _SUFFIXES and any(k.lower() in path.name.lower() for k in _KNOWN):
                found.append(path)
    return sorted(found, key=lambda p: ("Bold" in p.name, p.name))


def find_cjk_font() -> Path | None:
    """A font file with Chinese glyphs, or ``None``. ``$LINGXI_CJK_FONT`` wins when it exists."""
    explicit = os.environ.get(FONT_ENV)
    if explicit:
        if Path(explicit).is_file():
            return Path(explicit)
        log.warning("%s=%s is not a file; looking for a CJK font elsewhere", FONT_ENV, explicit)
    for candidates in (_from_fc_list(), _from_known_dirs()):
        for path in candidates:
            if path.is_file():
                return path
    return None


@functools.cache
def setup_matplotlib() -> str | None:
    """Select the Agg backend and register a CJK fallback font; returns its family name or ``None``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager, rcParams

    path = find_cjk_font()
    family = None
    if path is not None:
        try:
            font_manager.fontManager.addfont(str(path))
            family = font_manager.FontProperties(fname=str(path)).get_name()
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("cannot load CJK font %s: %s", path, exc)
    if family is None:
        warnings.warn(NO_FONT_WARNING, RuntimeWarning, stacklevel=2)
        log.warning(NO_FONT_WARNING)
        # one clear warning instead of one per missing glyph per figure
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        return None
    rcParams["font.family"] = ["DejaVu Sans", family]
    rcParams["axes.unicode_minus"] = False
    return family

"""``lingxi --version`` prints the installed package's version and exits 0."""

import subprocess
import sys
from importlib.metadata import version


def test_version_flag_prints_the_installed_version():
    proc = subprocess.run([sys.executable, "-m", "lingxi.serving.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lingxi {version('lingxi')}"

import subprocess
import sys

from mlip import __version__


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "mlip", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "mlip", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Example" in out.stdout

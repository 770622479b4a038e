import subprocess
import sys

from mlip import __version__


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "mlip", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "mlip", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Example" in out.stdout
    assert "config" in out.stdout  # mlip config show


def test_a_bad_option_value_is_one_line_naming_the_option(tmp_path):
    """click's own errors (usage, a hint and the error: three lines) come as one line, exit code 2."""
    for args, name in ((["train", "x", "--epochs", "abc"], "'--epochs'"),
                       (["train", "--resume", str(tmp_path / "none")], "'--resume'"),
                       (["trian"], "'trian'")):
        out = subprocess.run([sys.executable, "-m", "mlip", *args], capture_output=True, text=True,
                             cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == "" and len(out.stderr.splitlines()) == 1
        assert out.stderr.startswith("mlip: error: ") and name in out.stderr
    assert list(tmp_path.iterdir()) == []

"""Readers: files → :class:`Frame` (numpy arrays, LAMMPS metal units).

``read(path, format=None, *, types=None, energy_column=None, log=None,
units="atomic")`` yields frames from LAMMPS text dumps, extxyz, VASP OUTCAR /
vasprun.xml, mlearn JSON and RuNNer/n2p2 ``input.data`` files or folders of
them. Malformed input raises :class:`ParseError` with file and line.
"""

from parsers.errors import ParseError
from parsers.frame import Frame
from parsers.read import FORMATS, detect_format, read, read_frames

__all__ = ["FORMATS", "Frame", "ParseError", "detect_format", "read", "read_frames"]

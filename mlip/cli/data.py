"""``mlip data``: build and inspect HDF5 datasets (filled in by the dataset work)."""


from mlip.cli import main


@main.group()
def data() -> None:
    """Build and inspect HDF5 dataset files.

    \b
    Example:
      mlip data build dumps/ -o data.h5 --types 1=Y
      mlip data info data.h5
    """

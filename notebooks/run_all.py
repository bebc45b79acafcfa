"""Execute every notebook in this directory top to bottom; exit 1 if a cell errors.

    python notebooks/run_all.py            # after notebooks/make-data.sh

Notebooks run with notebooks/ as the working directory and are not rewritten.
"""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

here = pathlib.Path(__file__).resolve().parent
failed = []
for path in sorted(here.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
        print(f"ok      {path.name}")
    except CellExecutionError as e:
        failed.append(path.name)
        print(f"FAILED  {path.name}\n{e}", file=sys.stderr)
sys.exit(1 if failed else 0)

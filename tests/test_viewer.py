"""The slice viewer in a live Jupyter kernel, where it must show widgets (elsewhere it shows a figure).

00_core runs through nbclient and a real ipykernel, as JupyterLab runs it: the viewer's cell must
then output a widget view, and moving its slider from the kernel must redraw without error.
"""
import nbformat
from nbclient import NotebookClient
from conftest import ROOT


def test_viewer_is_interactive_in_a_kernel():
    nb = nbformat.read(ROOT/'nbs/00_core.ipynb', as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "v.sliders[0].value = 5\nv.channel.value = 0\nprint('redrawn', len(v.out.outputs))"))
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(ROOT/'nbs')}}).execute()
    shown = [c for c in nb.cells if c.cell_type == 'code' and c.source.startswith('v = SliceViewer(')]
    assert shown, "the notebook no longer shows a SliceViewer"
    mimes = {k for o in shown[0].outputs for k in o.get('data', {})}
    assert 'application/vnd.jupyter.widget-view+json' in mimes, f"no widget in a live kernel, got {mimes}"
    last = nb.cells[-1].outputs
    assert any('redrawn 1' in o.get('text', '') for o in last), last

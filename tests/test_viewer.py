"""The slice viewer in a live Jupyter kernel, where it must show widgets (elsewhere it shows a figure).

00_core runs through nbclient and a real ipykernel, as JupyterLab runs it: the viewer's cell must
then output a widget view, and moving its slider from the kernel must redraw without error.

This test used to hang now and then (2 runs in 14 on an idle machine): ipykernel 7.4 sometimes never
sent the `execute_reply` of the cell that moves the slider, after its widget messages and its `idle`
status had gone out, and nbclient waited on the shell channel. With ipykernel 6.31 (settings.ini pins
`ipykernel<7`) 45 runs in a row passed. Should a kernel stall again, pytest-timeout fails the test
after ten minutes (pyproject.toml), whether or not nbclient's own per-cell limit fires — in the hangs
seen it had not, after more than its 300 s.
"""
import nbformat
from nbclient import NotebookClient
from conftest import ROOT


def test_viewer_is_interactive_in_a_kernel():
    nb = nbformat.read(ROOT/'nbs/00_core.ipynb', as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "v.sliders[0].value = 5\nv.channel.value = 0\nprint('redrawn', len(v.out.outputs))"))
    NotebookClient(nb, timeout=120, startup_timeout=60, kernel_name='python3', resources={'metadata': {'path': str(ROOT/'nbs')}}).execute()
    shown = [c for c in nb.cells if c.cell_type == 'code' and c.source.startswith('v = SliceViewer(')]
    assert shown, "the notebook no longer shows a SliceViewer"
    mimes = {k for o in shown[0].outputs for k in o.get('data', {})}
    assert 'application/vnd.jupyter.widget-view+json' in mimes, f"no widget in a live kernel, got {mimes}"
    last = nb.cells[-1].outputs
    assert any('redrawn 1' in o.get('text', '') for o in last), last

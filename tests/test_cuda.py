"""Checks that need a CUDA GPU: marked `cuda`, skipped without one (tests/conftest.py); `make test-gpu` runs them
(with the two-GPU data-parallel check of tests/test_parallel.py and the notebooks' `#| cuda` cells).

On a CPU the memory estimate is checked against a measured step in `nbs/20a_memory.ipynb`; here it meets the
allocator it is for, in fp32 and — the part a CPU cannot check — under CUDA's bf16 autocast.
"""
import json
import pytest
import torch
from conftest import ROOT

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
@pytest.mark.parametrize('task', ['rotation', 'mim', 'rubik'])
def test_memory_estimate_meets_the_gpu(task, precision):
    "One pretraining step at the paper's width on a small batch: the estimate within 15 % of the peak torch's allocator measured."
    from ssl3d_nb.core import get_generator
    from ssl3d_nb.tasks import get_task
    from ssl3d_nb.memory import training_memory, GiB
    t, p = get_task(task).setup('paper', crop=64 if task != 'rubik' else 71, bs=2)
    est = training_memory(task, 'paper', precision, crop=p['crop'], bs=2)
    dev = torch.device('cuda')
    model = t.model(t.encoder(1, p['width_mult'])).to(dev)
    opt = torch.optim.Adam(model.parameters())
    inputs, targets = t.make(torch.rand(2, 1, *[p['crop']] * 3, device=dev), get_generator(0, dev))
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=precision == 'bf16'): loss = t.loss(model(*inputs), *targets)
    loss.backward(); opt.step(); torch.cuda.synchronize()
    got = (torch.cuda.max_memory_allocated() - base) / GiB
    counted = est['peak'] - est['weights'] - est['batch']          # allocated before the measurement starts
    assert abs(counted - got) <= 0.15 * got, f"{task} {precision}: estimated {counted:.3f} GiB, measured {got:.3f}"


@pytest.mark.parametrize('task', ['rotation', 'jigsaw', 'rpl', 'cpc', 'exemplar', 'rubik', 'rubik-order', 'mim'])
def test_every_3d_task_pretrains_on_the_gpu_in_bf16(task, tmp_path):
    "`ssl3d pretrain` on the GPU in bf16, channels-last, with accumulation and checkpointing: two steps, an encoder written, a finite loss."
    from ssl3d_nb.cli import main
    assert main(['pretrain', '--task', task, '--data', str(ROOT/'data_samples/brains'), '--out', str(tmp_path/'run'), '--epochs', '1',
                 '--steps', '2', '--bs', '4', '--accum', '2', '--checkpointing', '--precision', 'bf16', '--channels_last']) == 0
    hist = (tmp_path/'run/history.csv').read_text().splitlines()
    assert len(hist) == 2 and 'nan' not in hist[1]
    assert json.loads((tmp_path/'run/config.json').read_text())['precision'] == 'bf16'

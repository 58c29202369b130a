"""Data-parallel training in two CPU processes (gloo), started by `torchrun` as a user would start it on GPUs.

`tests/ddp_check.py` runs in both processes: `ssl3d pretrain` (the command's function), then one
epoch under `data_parallel` that records what each process trained on. Checked here: the command
wrote its files once, from rank 0, and says it ran in 2 processes; the two shards are disjoint and
together are the epoch that one process would have run; the model was `DistributedDataParallel`
during the fit and both processes ended with the same weights.
"""
import json, os, subprocess
import pytest
import torch
from conftest import ROOT, BIN


def test_two_processes(tmp_path): check_two_processes(tmp_path, gpus=False)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two GPUs')
def test_two_gpus(tmp_path):
    "The same on two GPUs: NCCL, one GPU per process (`make test-gpu` on a machine with several)."
    check_two_processes(tmp_path, gpus=True)


def check_two_processes(tmp_path, gpus:bool):
    env = {**os.environ, **({} if gpus else {'CUDA_VISIBLE_DEVICES': ''})}     # the CPU check stays on gloo on a GPU machine too
    r = subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', '2', str(ROOT/'tests/ddp_check.py'),
                        str(ROOT/'data_samples/brains'), str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-6000:]
    run = tmp_path/'run'
    assert sorted(p.name for p in run.iterdir()) == ['.ssl3d-manifest.json', 'checkpoint.pth', 'config.json', 'encoder.pth', 'history.csv']
    assert json.loads((run/'config.json').read_text())['processes'] == 2
    meta = torch.load(run/'encoder.pth', weights_only=True)['meta']
    assert meta['processes'] == 2 and len(meta['history']) == 2
    assert r.stdout.count('pretraining rpl on 3 scans') == 1, r.stdout        # rank 0 alone prints
    a, b = (json.loads((tmp_path/f'rank{i}.json').read_text()) for i in (0, 1))
    assert a['world'] == b['world'] == 2 and a['model'] == b['model'] == 'DistributedDataParallel'
    assert a['shard'] + b['shard'] == a['full'] and len(a['shard']) == len(b['shard']) == a['n_train'] // 2
    assert a['batches'] == b['batches'] == a['n_train'] // 2 // 2      # bs 2 in each process
    assert abs(a['checksum'] - b['checksum']) < 1e-9 * abs(a['checksum'])

"""End to end on CPU: torchrun + gloo + FSDP2, SIGKILL/SIGTERM recovery, S3, bad checkpoints.

Every run uses the tiny preset, 30 steps, a checkpoint every 10. Exactness claims compare the
logged float loss with ``==``: CPU runs are bit-for-bit reproducible for a fixed seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
import subprocess
import time

import pytest

STEPS = ["--max-steps", "30", "--checkpoint-every", "10", "--seed", "7"]


@pytest.fixture(scope="module")
def baseline2(tmp_path_factory, wl, cache_dir):
    """An uninterrupted 2-process torchrun run, with asynchronous checkpoints (the GPU default)
    and an evaluation every 10 steps (the interrupted runs evaluate at the end only: the
    held-out passes change nothing in training)."""
    d = tmp_path_factory.mktemp("baseline2")
    proc = wl.run_train([*wl.TINY, *STEPS, "--async-checkpoint", "--checkpoint-dir", str(d / "ckpt"),
                         "--metrics-file", str(d / "m.jsonl"), "--eval-every", "10",
                         "--tensorboard-dir", str(d / "tb")], wl.base_env(cache_dir), nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (d / "stdout.txt").write_text(proc.stdout)
    return d, wl.read_metrics(d / "m.jsonl")


@pytest.fixture(scope="module")
def baseline1(tmp_path_factory, wl, cache_dir, small_data):
    """An uninterrupted single-process run on the small dataset."""
    d = tmp_path_factory.mktemp("baseline1")
    proc = wl.run_train([*wl.TINY, *STEPS, "--data", str(small_data), "--keep-last", "5",
                         "--checkpoint-dir", str(d / "ckpt"), "--metrics-file", str(d / "m.jsonl")],
                        wl.base_env(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return d, wl.read_metrics(d / "m.jsonl")


def test_torchrun_two_processes_loss_falls(baseline2):
    d, (steps, events) = baseline2
    assert sorted(steps) == list(range(1, 31))
    first = sum(steps[s]["loss"] for s in range(1, 4)) / 3
    last = sum(steps[s]["loss"] for s in range(28, 31)) / 3
    assert last < first - 1.0, (first, last)
    manifest = json.loads((d / "ckpt" / "step-00000030" / "MANIFEST.json").read_text())
    assert manifest["world_size"] == 2
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata"} <= set(manifest["files"])
    assert (d / "ckpt" / "latest").read_text() == "step-00000030"
    assert sorted(p.name for p in (d / "ckpt").glob("step-*")) == \
        ["step-00000010", "step-00000020", "step-00000030"]  # all committed (async)
    assert events[-1]["event"] == "done"
    # the banner names the data: no --data is the built-in corpus, with its size and source
    banner = (d / "stdout.txt").read_text()
    assert "data: the built-in corpus (" in banner and "M tokens, byte tokenizer" in banner
    assert "stdlib .py sources" in banner


def test_evaluation_every_n_steps_and_what_the_checkpoint_root_carries(baseline2):
    """Held-out loss at 10, 20 and 30 (falling), in the metrics file, on the step records the
    Prometheus sidecar serves, and in TensorBoard; model.json and tokenizer.json at the root."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from workloads.llm.config import PRESETS

    d, (steps, events) = baseline2
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30]
    assert evals[0]["eval_loss"] > evals[-1]["eval_loss"]
    for e in evals:
        assert e["eval_perplexity"] == pytest.approx(math.exp(e["eval_loss"]))
        assert e["eval_tokens"] == 20 * 2 * 8 * 64  # batches x ranks x micro-batch x seq
    assert steps[25]["eval_loss"] == evals[1]["eval_loss"] and steps[25]["eval_step"] == 20
    assert "eval_loss" not in steps[5]
    tb = EventAccumulator(str(d / "tb"))
    tb.Reload()
    assert [e.step for e in tb.Scalars("eval/loss")] == [10, 20, 30]
    assert len(tb.Scalars("train/loss")) == 30
    desc = json.loads((d / "ckpt" / "model.json").read_text())
    assert desc == {"model": dataclasses.asdict(PRESETS["tiny"].model), "preset": "tiny",
                    "tokenizer": "byte"}
    assert json.loads((d / "ckpt" / "tokenizer.json").read_text())["model"]["type"] == "BPE"


def test_sigkill_one_worker_resumes_exactly(baseline2, tmp_path, wl, cache_dir):
    """Rank 1 is SIGKILLed after step 15; torchrun restarts both workers, which resume from the
    step-10 checkpoint and finish with the very same losses as the uninterrupted run (which
    saved asynchronously; this one synchronously: the checkpoint mode changes nothing)."""
    env = wl.base_env(cache_dir, TRAINYARD_FAULT_KILL_STEP="15", TRAINYARD_FAULT_KILL_RANK="1")
    # --log-every 2: steps 11-14 reach the metrics file before the kill, and are redone
    proc = wl.run_train([*wl.TINY, *STEPS, "--log-every", "2", "--checkpoint-dir",
                         str(tmp_path / "ckpt"), "--metrics-file", str(tmp_path / "m.jsonl")],
                        env, nproc=2, max_restarts=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(exitcode: -9) local_rank: 1" in proc.stderr  # torchrun saw the SIGKILL
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    resumes = [e for e in events if e["event"] == "resume"]
    assert [e["step"] for e in resumes] == [10] and resumes[0]["dropped_records"] >= 4
    logged = [json.loads(x)["step"] for x in (tmp_path / "m.jsonl").read_text().splitlines()
              if '"loss"' in x]
    assert logged == list(range(1, 31))  # the steps redone after the resume appear once
    _, (base, _) = baseline2
    assert steps[30]["loss"] == base[30]["loss"]
    assert all(steps[s]["loss"] == base[s]["loss"] for s in range(11, 31))


def _wait_for_step(path, step, proc, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "trainer exited early"
        if path.exists() and any(json.loads(x).get("step", 0) >= step
                                 for x in path.read_text().splitlines() if '"loss"' in x):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} never logged")


@pytest.mark.parametrize("nproc", [0, 2], ids=["python", "launch"])
def test_sigterm_saves_then_exits_75(nproc, tmp_path, wl, cache_dir):
    """A SIGTERM from outside (the kubelet draining the node signals the container's main
    process): the run stops at a step boundary, saves and exits 75, alone or under the
    launcher the rendered TrainJob runs (torchrun, whose own exit would be 1)."""
    args = [*wl.TINY, "--max-steps", "100000", "--checkpoint-every", "100000",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--metrics-file", str(tmp_path / "m.jsonl")]
    cmd = wl.train_command(args, nproc, launcher="workloads.common.launch")
    proc = subprocess.Popen(cmd, cwd=wl.REPO, env=wl.base_env(cache_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(tmp_path / "m.jsonl", 3, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    preempted = [e for e in events if e["event"] == "preempted"]
    assert len(preempted) == 1 and preempted[0]["exit_code"] == 75
    assert preempted[0]["save_s"] >= 0
    stop = preempted[0]["step"]
    assert max(steps) == stop
    assert (tmp_path / "ckpt" / "latest").read_text() == f"step-{stop:08d}"
    assert (tmp_path / "ckpt" / f"step-{stop:08d}" / "MANIFEST.json").is_file()
    assert "SIGTERM received" in out
    assert proc.returncode == 75, err
    if nproc:
        assert "preempted): exit 75" in err


def test_sigterm_mid_training_exits_75_and_resumes_bit_exact(baseline2, tmp_path, wl,
                                                              cache_dir):
    """The interruption chain on CPU with the real launcher, torchrun and checkpoint path:
    torchrun is sent SIGTERM after step 12 (by rank 0, as the kubelet would; the hook waits for
    the forwarded signal, so the step is known), every rank stops after step 13, the checkpoint
    of step 13 is complete, the launcher exits 75; the same command again resumes at 13 and
    ends with the very losses of the uninterrupted run."""
    from workloads.common.checkpoint import CheckpointStore
    from workloads.common.dist import DistInfo

    args = [*wl.TINY, *STEPS, "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--metrics-file", str(tmp_path / "m.jsonl")]
    env = wl.base_env(cache_dir, TRAINYARD_FAULT_TERM_STEP="12")
    first = wl.run_train(args, env, nproc=2, launcher="workloads.common.launch")
    assert first.returncode == 75, first.stdout + first.stderr
    assert "Received 15 death signal" in first.stderr  # torchrun itself was signalled
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    assert [(e["event"], e["step"]) for e in events] == [
        ("checkpoint", 10), ("checkpoint", 13), ("preempted", 13)]
    assert max(steps) == 13
    store = CheckpointStore(str(tmp_path / "ckpt"), DistInfo())
    assert store.check(13) is None  # manifest present, every shard at its listed size
    assert store.latest_complete() == 13

    second = wl.run_train(args, env, nproc=2, launcher="workloads.common.launch")
    assert second.returncode == 0, second.stdout + second.stderr
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    assert [e["step"] for e in events if e["event"] == "resume"] == [13]
    _, (base, _) = baseline2
    assert all(steps[s]["loss"] == base[s]["loss"] for s in range(14, 31))
    assert all(steps[s]["loss"] == base[s]["loss"] for s in range(1, 14))


def test_truncated_and_half_written_checkpoints_are_skipped(baseline1, tmp_path, wl, cache_dir,
                                                            small_data):
    base_dir, (base, _) = baseline1
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_dir / "ckpt", ckpt)
    shard = ckpt / "step-00000030" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    half = ckpt / "step-00000025"  # a crash mid-save: files, no manifest
    half.mkdir()
    shutil.copy(ckpt / "step-00000020" / "__0_0.distcp", half / "__0_0.distcp")
    proc = wl.run_train([*wl.TINY, *STEPS, "--data", str(small_data), "--checkpoint-dir",
                         str(ckpt), "--metrics-file", str(tmp_path / "m.jsonl")],
                        wl.base_env(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipping step-00000030" in proc.stdout and "truncated" in proc.stdout
    assert "skipping step-00000025: no manifest" in proc.stdout
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    assert [e["step"] for e in events if e["event"] == "resume"] == [20]
    assert steps[30]["loss"] == base[30]["loss"]


def test_s3_data_and_checkpoints_survive_kill_and_transient_errors(baseline1, s3, tmp_path, wl,
                                                                    cache_dir, small_data):
    """Data and checkpoints on S3 (moto behind a flaky proxy). The first run is SIGKILLed after
    step 15; the relaunch resumes from S3 and ends exactly where an uninterrupted run does."""
    env, proxy, direct = s3
    direct.create_bucket(Bucket="e2e-data")
    direct.create_bucket(Bucket="e2e-ckpt")
    for f in small_data.iterdir():
        direct.upload_file(str(f), "e2e-data", f"sets/small/{f.name}")
    proxy.reset(every=5, max_failures=9)
    cache = tmp_path / "cache"  # a fresh node: nothing cached yet
    args = [*wl.TINY, *STEPS, "--keep-last", "2", "--data", "s3://e2e-data/sets/small",
            "--checkpoint-dir", "s3://e2e-ckpt/runs/r1", "--metrics-file", str(tmp_path / "m.jsonl"),
            "--tensorboard-dir", "s3://e2e-ckpt/tb/r1"]
    first = wl.run_train(args, wl.base_env(cache, TRAINYARD_FAULT_KILL_STEP="15", **env))
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    second = wl.run_train(args, wl.base_env(cache, **env))
    assert second.returncode == 0, second.stdout + second.stderr
    assert proxy.failures == 9  # every injected failure was retried away
    steps, events = wl.read_metrics(tmp_path / "m.jsonl")
    assert [e["step"] for e in events if e["event"] == "resume"] == [10]
    _, (base, _) = baseline1
    assert steps[30]["loss"] == base[30]["loss"]
    objs = {o["Key"]: o["Size"] for o in direct.list_objects_v2(Bucket="e2e-ckpt")["Contents"]}
    assert sorted({k.split("/")[2] for k in objs if "/step-" in k}) == \
        ["step-00000020", "step-00000030"]  # keep-last 2
    assert json.loads(direct.get_object(Bucket="e2e-ckpt", Key="runs/r1/model.json")["Body"]
                      .read())["preset"] == "tiny"  # beside the checkpoints, for export
    assert any(k.startswith("tb/r1/events.out.tfevents.") for k in objs)  # uploaded TensorBoard
    manifest = json.loads(direct.get_object(Bucket="e2e-ckpt", Key="runs/r1/step-00000030/"
                                            "MANIFEST.json")["Body"].read())
    for name, size in manifest["files"].items():
        assert objs[f"runs/r1/step-00000030/{name}"] == size


def test_a_non_finite_loss_stops_before_saving_and_the_good_checkpoint_stays(baseline1, tmp_path,
                                                                            wl, cache_dir,
                                                                            small_data):
    """Resumed from step 20 with an absurd learning rate: the weights blow up, the loss turns
    non-finite, the run stops with one line at the next sync point (step 30 would be a
    checkpoint: it is never written) and exits 1; ``latest`` still names step 20."""
    base_dir, _ = baseline1
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_dir / "ckpt", ckpt)
    shutil.rmtree(ckpt / "step-00000030")
    (ckpt / "latest").write_text("step-00000020")
    proc = wl.run_train([*wl.TINY, *STEPS, "--data", str(small_data), "--lr", "1e30",
                         "--checkpoint-dir", str(ckpt), "--metrics-file",
                         str(tmp_path / "m.jsonl")], wl.base_env(cache_dir))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "llm: error: non-finite" in lines[0] and "the newest checkpoint (step 20)" in lines[0]
    assert (ckpt / "latest").read_text() == "step-00000020"
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-00000010", "step-00000020"]
    _, events = wl.read_metrics(tmp_path / "m.jsonl")
    assert [e["event"] for e in events] == ["resume", "non_finite"]


def test_resuming_with_more_steps_keeps_the_warmup(baseline1, tmp_path, wl, cache_dir,
                                                  small_data):
    """The 30-step run warmed up over 3 steps (max_steps // 10); resumed with --max-steps 60 it
    keeps those 3 (a fresh 60-step run would take 6) and follows the longer cosine."""
    from workloads.llm.config import TrainConfig
    from workloads.llm.parallel import Schedule

    base_dir, (base, _) = baseline1
    assert base[3]["lr"] == pytest.approx(3e-3) and base[2]["lr"] < base[3]["lr"]
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_dir / "ckpt", ckpt)
    args = [*wl.TINY, "--max-steps", "40", "--checkpoint-every", "10", "--seed", "7",
            "--data", str(small_data), "--checkpoint-dir", str(ckpt),
            "--metrics-file", str(tmp_path / "m.jsonl")]
    proc = wl.run_train(args, wl.base_env(cache_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps, _ = wl.read_metrics(tmp_path / "m.jsonl")
    kept = Schedule.of(TrainConfig(max_steps=40), warmup=3)
    assert [steps[s]["lr"] for s in range(31, 41)] == [kept.lr(s) for s in range(31, 41)]
    assert Schedule.of(TrainConfig(max_steps=40)).warmup == 4  # what it would have moved to


def test_hsdp_on_two_nodes_of_two_matches_one_process(tmp_path, wl, cache_dir):
    """Two torchrun "nodes" of 2 gloo workers each (static rendezvous on localhost): the mesh is
    HSDP 2 x 2 (replicate across nodes, shard within), and its losses are those of one process
    taking the same 32 windows per step (every world size starts from the same weights), up to
    float summation order: the gradients are averaged over both mesh dimensions."""
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [*wl.TINY, "--max-steps", "4", "--log-every", "2", "--eval-batches", "2",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", "4"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={r}",
         "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={port}",
         "-m", "workloads.llm.train", *args, "--metrics-file", str(tmp_path / f"m{r}.jsonl")],
        cwd=wl.REPO, env=wl.base_env(cache_dir), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "world 4 on cpu (HSDP 2 x 2)" in outs[0]
    manifest = json.loads((tmp_path / "ckpt" / "step-00000004" / "MANIFEST.json").read_text())
    assert manifest["world_size"] == 4
    hsdp, _ = wl.read_metrics(tmp_path / "m0.jsonl")  # rank 0 is on node 0
    one = wl.run_train([*wl.TINY, "--max-steps", "4", "--micro-batch-size", "32",
                        "--eval-batches", "0", "--metrics-file", str(tmp_path / "one.jsonl")],
                       wl.base_env(cache_dir))
    assert one.returncode == 0, one.stdout + one.stderr
    ref, _ = wl.read_metrics(tmp_path / "one.jsonl")
    for s in range(1, 5):
        assert hsdp[s]["loss"] == pytest.approx(ref[s]["loss"], rel=1e-4), s


def test_resuming_another_model_is_refused_before_loading(baseline1, tmp_path, wl, cache_dir,
                                                         small_data):
    base_dir, _ = baseline1
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base_dir / "ckpt", ckpt)
    proc = wl.run_train([*wl.TINY, *STEPS, "--data", str(small_data), "--vocab-size", "512",
                         "--checkpoint-dir", str(ckpt)], wl.base_env(cache_dir))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--checkpoint-dir" in lines[0]
    assert "holds checkpoints of another model (vocab_size 256 -> 512)" in lines[0]

"""`torchlab bench`'s report, with fake clocks: what is timed and how the figures are made. The
real seconds are make bench's to publish, never a test's to assert (a busy machine moves them)."""

from __future__ import annotations

import pytest
import torch

from torchlab import bench


def test_batching_is_the_time_per_example_at_batch_1_over_batch_256(monkeypatch):
    calls = []

    def fake_timed(work, device, repeats):
        answers = work()
        calls.append((tuple(answers.shape), torch.is_grad_enabled(), device))
        return {1: 0.2e-3, 256: 6.4e-3}[answers.shape[0]]

    monkeypatch.setattr(bench, "timed", fake_timed)
    assert bench.batching_per_example_speedup() == pytest.approx(8.0)
    # One digit's ten scores, then 256 digits', as a server answers them: without autograd.
    assert calls == [((1, 10), False, "cpu"), ((256, 10), False, "cpu")]


def test_a_report_holds_every_figure_the_medians_of_reports_read(monkeypatch):
    monkeypatch.setattr(bench, "matmul_tflops", lambda device, dtype, size, repeats=1: 0.4)
    monkeypatch.setattr(bench, "dataloader_mbps", lambda workers: 2000.0)
    monkeypatch.setattr(bench, "batching_per_example_speedup", lambda: 8.0)
    report = bench.cpu_benchmarks(repeats=1)
    assert report["batching_per_example_speedup"] == 8.0
    assert bench.median_of_reports([report, report, report]) == report

"""Tests of `beam_jobs.bench` on a few real posters."""

import pytest

from beam_jobs import bench


@pytest.mark.real_data
def test_bench_variants_write_same_examples(dataset_dir, tmp_path):
    measurements = bench.run_benchmark(str(dataset_dir), num_posters=12, work_dir=str(tmp_path))

    assert [m.variant for m in measurements] == ["plain_loop", "beam_1_worker", "beam_2_workers"]
    assert {m.num_examples for m in measurements} == {12}
    assert all(m.wall_s > 0 for m in measurements)
    assert all(m.cpu_s > 0 for m in measurements)
    table = bench.format_table(measurements)
    assert "beam_2_workers" in table


def test_table_ratio_is_relative_to_plain_loop():
    measurements = [
        bench.Measurement("plain_loop", 100, wall_s=1.0, cpu_s=0.5),
        bench.Measurement("beam_1_worker", 100, wall_s=4.0, cpu_s=1.0),
    ]

    last_row = bench.format_table(measurements).splitlines()[-1].split()

    assert last_row[-1] == "0.25"
    assert last_row[-2] == "10.00"

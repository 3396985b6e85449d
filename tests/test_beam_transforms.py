"""Tests of the DoFns in `beam_jobs.transforms`, run on Beam's TestPipeline (DirectRunner)."""

import apache_beam as beam
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline as beam_test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs import records, summary, transforms
from tests import beam_fixtures
from tfpipe import schema

LABELS = beam_fixtures.GENRES


def counter_value(result, name: str) -> int:
    query = MetricsFilter().with_namespace(transforms.METRICS_NAMESPACE).with_name(name)
    counters = result.metrics().query(query)["counters"]
    return sum(counter.committed for counter in counters)


def csv_row(line_number, fields):
    return records.CsvRow(line_number, tuple(fields))


def test_check_rows_routes_rejections_and_notes():
    rows = [
        csv_row(2, beam_fixtures.csv_row("tt1", ["Drama"])),
        csv_row(3, beam_fixtures.csv_row("tt2", [])),
        csv_row(4, beam_fixtures.csv_row("tt3", ["Drama"])[:5]),
        csv_row(5, beam_fixtures.csv_row("tt4", ["Drama"], genre_string="['Horror']")),
    ]
    pipeline = beam_test_pipeline.TestPipeline()
    checked = (
        pipeline
        | beam.Create(rows)
        | beam.ParDo(transforms.CheckRowsDoFn(LABELS)).with_outputs(
            transforms.REJECTED, transforms.NOTES, main="rows"
        )
    )
    assert_that(
        checked.rows | "Ids" >> beam.Map(lambda row: row.poster_id), equal_to(["tt1", "tt4"])
    )
    assert_that(
        checked[transforms.REJECTED] | "Reasons" >> beam.Map(lambda r: (r.line_number, r.reason)),
        equal_to([(3, records.NO_GENRE), (4, records.WRONG_FIELD_COUNT)]),
        label="CheckRejected",
    )
    assert_that(
        checked[transforms.NOTES] | "Kinds" >> beam.Map(lambda note: (note.line_number, note.kind)),
        equal_to([(5, records.GENRE_STRING_MISMATCH)]),
        label="CheckNotes",
    )
    result = pipeline.run()
    result.wait_until_finish()

    assert counter_value(result, f"rejected_{records.NO_GENRE}") == 1
    assert counter_value(result, f"rejected_{records.WRONG_FIELD_COUNT}") == 1
    assert counter_value(result, f"note_{records.GENRE_STRING_MISMATCH}") == 1


def test_duplicates_keep_first_or_reject_all():
    drama = tuple([0] * 7 + [1] + [0] * 17)
    comedy = tuple([0] * 4 + [1] + [0] * 20)
    rows = [
        records.PosterRow(2, "same", drama),
        records.PosterRow(9, "same", drama),
        records.PosterRow(5, "same", drama),
        records.PosterRow(3, "conflict", drama),
        records.PosterRow(4, "conflict", comedy),
        records.PosterRow(6, "single", comedy),
    ]
    pipeline = beam_test_pipeline.TestPipeline()
    resolved = (
        pipeline
        | beam.Create(rows)
        | beam.Map(lambda row: (row.poster_id, row))
        | beam.GroupByKey()
        | beam.ParDo(transforms.ResolveDuplicatesDoFn()).with_outputs(
            transforms.REJECTED, main="rows"
        )
    )
    assert_that(
        resolved.rows | "Kept" >> beam.Map(lambda row: (row.poster_id, row.line_number)),
        equal_to([("same", 2), ("single", 6)]),
    )
    assert_that(
        resolved[transforms.REJECTED] | "Reasons" >> beam.Map(lambda r: (r.line_number, r.reason)),
        equal_to(
            [
                (5, records.DUPLICATE_ID),
                (9, records.DUPLICATE_ID),
                (3, records.DUPLICATE_ID_CONFLICTING_LABELS),
                (4, records.DUPLICATE_ID_CONFLICTING_LABELS),
            ]
        ),
        label="CheckRejected",
    )
    result = pipeline.run()
    result.wait_until_finish()

    assert counter_value(result, f"rejected_{records.DUPLICATE_ID}") == 2
    assert counter_value(result, f"rejected_{records.DUPLICATE_ID_CONFLICTING_LABELS}") == 2


def decodes_with_labels(expected_multi_hot):
    """Matcher: every Poster's Example parses, decodes as 3-channel JPEG, has these labels."""

    def check(posters):
        spec = schema.feature_spec(len(expected_multi_hot))
        assert posters, "no poster was loaded"
        for poster in posters:
            parsed = tf.io.parse_single_example(poster.serialized_example, spec)
            image = tf.io.decode_jpeg(parsed[schema.IMAGE_ENCODED_KEY], channels=3)
            assert image.shape == (poster.height, poster.width, 3)
            assert list(parsed[schema.LABEL_MULTI_HOT_KEY].numpy()) == list(expected_multi_hot)
            assert parsed[schema.IMAGE_ID_KEY].numpy().decode() == poster.poster_id

    return check


def test_load_posters_converts_and_rejects(tmp_path):
    files = {
        "good": beam_fixtures.image_bytes("RGB"),
        "png": beam_fixtures.image_bytes("RGBA", image_format="PNG"),
        "empty": b"",
        "text": b"not an image\n",
    }
    for name, data in files.items():
        (tmp_path / f"{name}.jpg").write_bytes(data)
    multi_hot = tuple([1] + [0] * 24)
    rows = [records.PosterRow(n + 2, name, multi_hot) for n, name in enumerate([*files, "missing"])]

    pipeline = beam_test_pipeline.TestPipeline()
    loaded = (
        pipeline
        | beam.Create(rows)
        | beam.ParDo(transforms.LoadPostersDoFn(str(tmp_path), 1_000_000, 0, 95)).with_outputs(
            transforms.REJECTED, transforms.NOTES, main="posters"
        )
    )
    assert_that(
        loaded.posters | "Conversions" >> beam.Map(lambda p: (p.poster_id, p.conversion)),
        equal_to([("good", ""), ("png", "png_to_jpeg+rgba_to_rgb")]),
    )
    assert_that(loaded.posters, decodes_with_labels(multi_hot), label="CheckExamples")
    assert_that(
        loaded[transforms.REJECTED] | "Reasons" >> beam.Map(lambda r: (r.poster_id, r.reason)),
        equal_to(
            [
                ("empty", records.EMPTY_IMAGE),
                ("text", records.NOT_AN_IMAGE),
                ("missing", records.MISSING_IMAGE),
            ]
        ),
        label="CheckRejected",
    )
    assert_that(
        loaded[transforms.NOTES] | "Kinds" >> beam.Map(lambda note: (note.poster_id, note.kind)),
        equal_to([("png", records.IMAGE_CONVERTED)]),
        label="CheckNotes",
    )
    result = pipeline.run()
    result.wait_until_finish()

    assert counter_value(result, "posters_loaded") == 2
    assert counter_value(result, "images_converted") == 1
    assert counter_value(result, f"rejected_{records.MISSING_IMAGE}") == 1


def test_summary_counts_events():
    multi_hot = (1, 1, 0)
    events = [
        (summary.ROW_EVENT,),
        (summary.ROW_EVENT,),
        (summary.ROW_EVENT,),
        (summary.BLANK_LINE_EVENT,),
        (summary.REJECTED_EVENT, records.NO_GENRE),
        (summary.EXAMPLE_EVENT, "train", multi_hot, 40, 30, 1000, ""),
        (summary.EXAMPLE_EVENT, "test", (0, 1, 0), 44, 30, 3000, "png_to_jpeg"),
    ]

    def check(outputs):
        (output,) = outputs
        assert output["num_input_rows"] == 3
        assert output["num_blank_lines"] == 1
        assert output["rejected"][records.NO_GENRE] == 1
        assert output["splits"]["train"]["label_counts"] == [1, 1, 0]
        assert output["splits"]["train"]["cooccurrence"][0] == [1, 1, 0]
        assert output["splits"]["test"]["num_examples"] == 1
        assert output["image_stats"]["height"] == {"min": 40, "median": 40, "max": 44}
        assert output["image_stats"]["bytes"]["mean"] == 2000.0
        assert output["image_stats"]["conversions"] == {"png_to_jpeg": 1}

    with beam_test_pipeline.TestPipeline() as pipeline:
        combined = (
            pipeline
            | beam.Create(events)
            | beam.CombineGlobally(summary.SummaryCombineFn(num_labels=3))
        )
        assert_that(combined, check)

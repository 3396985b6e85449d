"""Tests of `beam_jobs.csv_rows`: header checks, line numbers and the per-row checks."""

import pytest

from beam_jobs import csv_rows, records
from tests import beam_fixtures

LABELS = beam_fixtures.GENRES


def check(fields):
    return csv_rows.check_row(records.CsvRow(7, tuple(fields)), LABELS)


def test_header_gives_labels_in_column_order(tmp_path):
    path = tmp_path / "train.csv"
    beam_fixtures.write_csv(path, [beam_fixtures.csv_row("tt1", ["Drama"])])

    assert csv_rows.read_header(str(path)) == LABELS


def test_bom_and_crlf_are_read(tmp_path):
    path = tmp_path / "train.csv"
    rows = [
        beam_fixtures.csv_row("tt1", ["Drama"]),
        beam_fixtures.csv_row("tt2", ["Comedy", "Drama"]),
    ]
    beam_fixtures.write_csv(path, rows, line_ending="\r\n", bom=True)

    assert csv_rows.read_header(str(path)) == LABELS
    read = list(csv_rows.iter_csv_rows(str(path)))
    assert [row.line_number for row in read] == [2, 3]
    assert read[0].fields[0] == "tt1"
    assert read[1].fields[-1] == "0"


def test_quoted_newline_keeps_line_numbers(tmp_path):
    path = tmp_path / "train.csv"
    rows = [
        beam_fixtures.csv_row("tt1", ["Drama"], genre_string="['Drama',\n'Comedy']"),
        beam_fixtures.csv_row("tt2", ["Drama"]),
    ]
    beam_fixtures.write_csv(path, rows)

    read = list(csv_rows.iter_csv_rows(str(path)))

    assert [row.line_number for row in read] == [2, 4]


def test_non_utf8_row_is_rejected(tmp_path):
    path = tmp_path / "train.csv"
    bad = ",".join(beam_fixtures.csv_row("ttX", ["Drama"])).encode().replace(b"ttX", b"tt\xff")
    good = ",".join(beam_fixtures.csv_row("tt2", ["Drama"])).encode()
    path.write_bytes(",".join(beam_fixtures.HEADER).encode() + b"\n" + bad + b"\n" + good + b"\n")

    first, second = list(csv_rows.iter_csv_rows(str(path)))

    assert csv_rows.check_row(first, LABELS)[1].reason == records.INVALID_ENCODING
    assert csv_rows.check_row(second, LABELS)[0].poster_id == "tt2"


def test_unterminated_quote_row_is_rejected_with_hint(tmp_path):
    path = tmp_path / "train.csv"
    good = ",".join(beam_fixtures.csv_row("tt2", ["Drama"]))
    path.write_text(",".join(beam_fixtures.HEADER) + '\ntt1,"[Drama,1\n' + good + "\n")

    (row,) = list(csv_rows.iter_csv_rows(str(path)))
    _, rejection, _ = csv_rows.check_row(row, LABELS)

    assert rejection.reason == records.WRONG_FIELD_COUNT
    assert "unterminated quote" in rejection.detail


def test_unsplittable_csv_raises(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(",".join(beam_fixtures.HEADER) + '\ntt1,"' + "x" * 200_000 + "\n")

    with pytest.raises(csv_rows.InputError, match="after line 1"):
        list(csv_rows.iter_csv_rows(str(path)))


def test_blank_lines_are_yielded_as_none(tmp_path):
    path = tmp_path / "train.csv"
    line = ",".join(beam_fixtures.csv_row("tt1", ["Drama"]))
    path.write_text(",".join(beam_fixtures.HEADER) + "\n\n" + line + "\n\n")

    read = list(csv_rows.iter_csv_rows(str(path)))

    assert read[1].line_number == 3
    assert [row is None for row in read] == [True, False, True]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\xef\xbb\xbf\r\n", "is empty"),
        (",".join(beam_fixtures.HEADER).encode() + b"\n", "no data rows"),
        (b"Name,Genre,Drama\ntt1,[],1\n", "first two columns"),
        (b"Id,Genre\ntt1,[]\n", "no label columns"),
        (b"Id,Genre,Drama,Drama\ntt1,[],1,1\n", "repeats the label columns"),
    ],
    ids=["empty", "bom_only", "header_only", "wrong_first_column", "no_labels", "repeated_label"],
)
def test_unusable_csv_raises(tmp_path, content, message):
    path = tmp_path / "train.csv"
    path.write_bytes(content)

    with pytest.raises(csv_rows.InputError, match=message):
        csv_rows.read_header(str(path))


def test_missing_csv_raises(tmp_path):
    with pytest.raises(csv_rows.InputError, match="Cannot open"):
        csv_rows.read_header(str(tmp_path / "absent.csv"))


def test_valid_row_gives_multi_hot():
    poster_row, rejection, notes = check(beam_fixtures.csv_row("tt1", ["Action", "Western"]))

    assert rejection is None
    assert notes == []
    assert poster_row.multi_hot == tuple([1] + [0] * 23 + [1])
    assert poster_row.line_number == 7


@pytest.mark.parametrize(
    "fields, reason",
    [
        (beam_fixtures.csv_row("tt1", ["Drama"])[:-1], records.WRONG_FIELD_COUNT),
        (beam_fixtures.csv_row("tt1", ["Drama"]) + ["1"], records.WRONG_FIELD_COUNT),
        (beam_fixtures.csv_row("", ["Drama"]), records.MISSING_ID),
        (beam_fixtures.csv_row("../etc/passwd", ["Drama"]), records.UNSAFE_ID),
        (beam_fixtures.csv_row("a/b", ["Drama"]), records.UNSAFE_ID),
        (beam_fixtures.csv_row("a\\b", ["Drama"]), records.UNSAFE_ID),
        (beam_fixtures.csv_row("tt1..x", ["Drama"]), records.UNSAFE_ID),
        (beam_fixtures.csv_row(" tt1", ["Drama"]), records.UNSAFE_ID),
        (beam_fixtures.csv_row("tt\ufffd1", ["Drama"]), records.INVALID_ENCODING),
        (beam_fixtures.csv_row("tt1", []), records.NO_GENRE),
    ],
    ids=[
        "short",
        "long",
        "empty_id",
        "dot_dot",
        "slash",
        "backslash",
        "inner_dot_dot",
        "space",
        "not_utf8",
        "no_genre",
    ],
)
def test_bad_row_is_rejected(fields, reason):
    poster_row, rejection, _ = check(fields)

    assert poster_row is None
    assert rejection.reason == reason
    assert rejection.line_number == 7


@pytest.mark.parametrize(
    "cell", ["", "2", "yes", "1.0", "-1"], ids=["empty", "two", "word", "float", "minus"]
)
def test_invalid_label_cell_is_rejected(cell):
    fields = beam_fixtures.csv_row("tt1", ["Drama"])
    fields[2 + LABELS.index("Crime")] = cell

    _, rejection, _ = check(fields)

    assert rejection.reason == records.INVALID_LABEL_VALUE
    assert "Crime" in rejection.detail


def test_genre_mismatch_keeps_one_hot():
    fields = beam_fixtures.csv_row("tt1", ["Drama"], genre_string="['Comedy']")

    poster_row, rejection, notes = check(fields)

    assert rejection is None
    assert poster_row.multi_hot[LABELS.index("Drama")] == 1
    assert poster_row.multi_hot[LABELS.index("Comedy")] == 0
    assert [note.kind for note in notes] == [records.GENRE_STRING_MISMATCH]


def test_unparsable_genre_string_is_noted():
    fields = beam_fixtures.csv_row("tt1", ["Drama"], genre_string="Drama|Comedy")

    poster_row, _, notes = check(fields)

    assert poster_row is not None
    assert [note.kind for note in notes] == [records.GENRE_STRING_UNPARSABLE]


def test_genre_string_order_does_not_matter():
    fields = beam_fixtures.csv_row("tt1", ["Drama", "Comedy"], genre_string="['Drama', 'Comedy']")

    _, _, notes = check(fields)

    assert notes == []
